//! The device twin: one automerge document per device.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use wrale_core::model::{DeviceInfo, Location};
use wrale_core::{BoardModel, DeviceId, GroupId, Timestamp};

use crate::author::{Author, AuthorKind, genesis_actor, new_actor};
use crate::config::{ConfigValidator, DesiredConfig, Rejection};
use crate::error::{Error, Result};
use crate::reported::{ConfigStatus, P_READING, ReportPolicy, Reported, ReportedUpdate};
use crate::schema::{
    Candidate, Conflict, FieldPath, FieldPolicy, FieldValue, SCHEMA_VERSION, Section, policy_for,
    resolve,
};

/// One version in a twin's history: a change, who made it, when and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// The change hash; `rollback(&[hash])` returns to the state right after it.
    pub hash: ChangeHash,
    /// Who made it.
    pub author: Author,
    /// When (the writer's clock).
    pub at: Timestamp,
    /// The commit message, or the fields it touched.
    pub summary: String,
}

/// The device's verdict on its desired config.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigVerdict {
    /// Safe: the device applies it.
    Accepted(DesiredConfig),
    /// Refused, with the reason; the device keeps its previous config.
    Rejected(Rejection),
}

/// A raw field write: `None` deletes the key.
pub(crate) type FieldWrite = (FieldPath, Option<FieldValue>);

/// A device twin: sections `meta`, `desired` and `reported` in one automerge
/// document, with typed accessors, per-field conflict resolution and history.
///
/// ```
/// use wrale_core::{BoardModel, DeviceId, Timestamp};
/// use wrale_core::model::DeviceInfo;
/// use wrale_core::units::Celsius;
/// use wrale_sync::{Author, Twin, ReportedUpdate};
///
/// let id = DeviceId::new("pi-01").unwrap();
/// let info = DeviceInfo { id: id.clone(), model: BoardModel::Pi4B, serial: None,
///     firmware_version: None, agent_version: None, labels: Default::default(),
///     location: Default::default(), group: None };
/// let t0 = Timestamp::from_secs(1_800_000_000);
/// let mut fleet = Twin::new(&info, Author::fleet("fleetd"), t0).unwrap();
/// fleet.edit_desired(|d| d.warn = Some(Celsius(65.0)), &Author::user("alice"), t0).unwrap();
///
/// // The device starts from the fleet's bytes (or syncs from an empty twin).
/// let mut device = Twin::load(&fleet.save(), Author::device(&id)).unwrap();
/// assert_eq!(device.desired().unwrap().warn, Some(Celsius(65.0)));
/// assert!(device.report(&ReportedUpdate::default().reading("cpu_temp_c", 51.0), t0).unwrap());
/// // Inside the deadband: no change, no history.
/// assert!(!device.report(&ReportedUpdate::default().reading("cpu_temp_c", 51.4), t0).unwrap());
/// fleet.merge(&mut device).unwrap();
/// assert_eq!(fleet.reported().unwrap().cpu_temp(), Some(Celsius(51.0)));
/// ```
#[derive(Debug)]
pub struct Twin {
    pub(crate) doc: AutoCommit,
    device: DeviceId,
    epoch: u64,
    local: Author,
    actors: HashMap<Author, ActorId>,
    sections: [ObjId; 3],
    actors_obj: ObjId,
    pub(crate) prev_obj: ObjId,
    report_policy: ReportPolicy,
    last_report: HashMap<String, Timestamp>,
    saved_heads: Vec<ChangeHash>,
}

fn section_index(s: Section) -> usize {
    match s {
        Section::Meta => 0,
        Section::Desired => 1,
        Section::Reported => 2,
    }
}

/// The deterministic first change of a twin at an epoch: every peer that creates
/// the twin of `device` at `epoch` produces the same bytes and the same hash, so
/// twins created independently (fleetd at enrollment, the device at first boot)
/// share their section objects and merge cleanly.
pub(crate) fn genesis(device: &DeviceId, epoch: u64) -> Result<AutoCommit> {
    let mut doc = AutoCommit::new().with_actor(genesis_actor());
    doc.put(ROOT, "schema", SCHEMA_VERSION as i64)?;
    doc.put(ROOT, "device", device.as_str())?;
    doc.put(ROOT, "epoch", epoch as i64)?;
    for s in Section::ALL {
        doc.put_object(ROOT, s.as_str(), ObjType::Map)?;
    }
    doc.put_object(ROOT, "actors", ObjType::Map)?;
    doc.put_object(ROOT, "prev", ObjType::Map)?;
    doc.commit_with(CommitOptions::default().with_time(0));
    Ok(doc)
}

fn root_int(doc: &AutoCommit, key: &str) -> Result<i64> {
    match doc.get(ROOT, key)? {
        Some((Value::Scalar(s), _)) => match FieldValue::from_scalar(&s) {
            Some(FieldValue::Int(i)) => Ok(i),
            _ => Err(Error::Schema(format!("root key {key:?} is not an integer"))),
        },
        _ => Err(Error::Schema(format!("root key {key:?} is missing"))),
    }
}

fn root_map(doc: &AutoCommit, key: &str) -> Result<ObjId> {
    let all = doc.get_all(ROOT, key)?;
    match all.as_slice() {
        [(Value::Object(ObjType::Map), id)] => Ok(id.clone()),
        [] => Err(Error::Schema(format!("section {key:?} is missing"))),
        _ => Err(Error::Schema(format!(
            "section {key:?} is not a single map (twins created without the shared genesis?)"
        ))),
    }
}

pub(crate) fn actor_of(id: &ObjId) -> Option<&ActorId> {
    match id {
        ObjId::Id(_, actor, _) => Some(actor),
        ObjId::Root => None,
    }
}

impl Twin {
    /// Creates the twin of a device at epoch 0: the shared genesis plus `meta`
    /// written by `local`, who is also the author of [`Twin::report`].
    pub fn new(device: &DeviceInfo, local: Author, now: Timestamp) -> Result<Twin> {
        let mut t = Twin::empty(&device.id, local.clone())?;
        t.set_meta(device, &local, now)?;
        Ok(t)
    }

    /// The twin of `device` with nothing but the genesis: a peer that will receive
    /// everything through sync starts here.
    pub fn empty(device: &DeviceId, local: Author) -> Result<Twin> {
        Twin::attach(genesis(device, 0)?, local)
    }

    /// Loads a saved twin (from [`Twin::save`]). `local` becomes the author of
    /// [`Twin::report`]; fresh actor ids are used for every author of this instance.
    pub fn load(bytes: &[u8], local: Author) -> Result<Twin> {
        let doc = AutoCommit::load(bytes).map_err(|e| Error::Decode {
            what: "twin document",
            reason: e.to_string(),
        })?;
        Twin::attach(doc, local)
    }

    /// Loads a saved snapshot plus incremental changes appended after it.
    pub fn load_parts<'a>(
        snapshot: &[u8],
        changes: impl IntoIterator<Item = &'a [u8]>,
        local: Author,
    ) -> Result<Twin> {
        let mut doc = AutoCommit::load(snapshot).map_err(|e| Error::Decode {
            what: "twin snapshot",
            reason: e.to_string(),
        })?;
        for c in changes {
            doc.load_incremental(c).map_err(|e| Error::Decode {
                what: "twin changes",
                reason: e.to_string(),
            })?;
        }
        Twin::attach(doc, local)
    }

    pub(crate) fn attach(mut doc: AutoCommit, local: Author) -> Result<Twin> {
        let schema = root_int(&doc, "schema")?;
        if schema < 1 || schema as u64 > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                found: schema as u64,
                supported: SCHEMA_VERSION,
            });
        }
        let device = match doc.get(ROOT, "device")? {
            Some((Value::Scalar(s), _)) => match FieldValue::from_scalar(&s) {
                Some(FieldValue::Str(s)) => {
                    DeviceId::new(s).map_err(|e| Error::Schema(e.to_string()))?
                }
                _ => return Err(Error::Schema("root key \"device\" is not a string".into())),
            },
            _ => return Err(Error::Schema("root key \"device\" is missing".into())),
        };
        let epoch = root_int(&doc, "epoch")?;
        let epoch = u64::try_from(epoch).map_err(|_| Error::Schema("negative epoch".into()))?;
        let sections = [
            root_map(&doc, "meta")?,
            root_map(&doc, "desired")?,
            root_map(&doc, "reported")?,
        ];
        let actors_obj = root_map(&doc, "actors")?;
        let prev_obj = root_map(&doc, "prev")?;
        doc.set_actor(new_actor(local.kind));
        let saved_heads = doc.get_heads();
        Ok(Twin {
            doc,
            device,
            epoch,
            local,
            actors: HashMap::new(),
            sections,
            actors_obj,
            prev_obj,
            report_policy: ReportPolicy::default(),
            last_report: HashMap::new(),
            saved_heads,
        })
    }

    /// Replaces the deadband / minimum-interval policy of [`Twin::report`].
    pub fn set_report_policy(&mut self, policy: ReportPolicy) {
        self.report_policy = policy;
    }

    /// The device this twin describes.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The epoch of this document (see [`Twin::compact`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The author of [`Twin::report`] and carried-over edits.
    pub fn local_author(&self) -> &Author {
        &self.local
    }

    /// The current version: automerge heads.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        let mut h = self.doc.get_heads();
        h.sort();
        h
    }

    /// Number of changes in this epoch's history.
    pub fn change_count(&mut self) -> usize {
        self.doc.document().stats().num_changes as usize
    }

    /// The whole document, compressed.
    pub fn save(&mut self) -> Vec<u8> {
        let bytes = self.doc.save();
        self.saved_heads = self.doc.get_heads();
        bytes
    }

    /// The changes made or received since the last `save`/`save_incremental`, to
    /// append to a store.
    ///
    /// A freshly created or loaded twin counts as saved: store a full
    /// [`Twin::save`] first when the store does not hold it yet.
    pub fn save_incremental(&mut self) -> Vec<u8> {
        let bytes = self.doc.save_after(&self.saved_heads);
        self.saved_heads = self.doc.get_heads();
        bytes
    }

    /// Merges another instance of the same twin (same device and epoch).
    pub fn merge(&mut self, other: &mut Twin) -> Result<()> {
        if other.device != self.device {
            return Err(Error::WrongDevice {
                ours: self.device.to_string(),
                theirs: other.device.to_string(),
            });
        }
        if other.epoch != self.epoch {
            return Err(Error::EpochMismatch {
                ours: self.epoch,
                theirs: other.epoch,
            });
        }
        self.doc.merge(&mut other.doc)?;
        Ok(())
    }

    pub(crate) fn obj(&self, s: Section) -> &ObjId {
        &self.sections[section_index(s)]
    }

    /// Every concurrent value of a field with the operation that wrote it.
    pub(crate) fn raw_candidates(
        &self,
        section: Section,
        key: &str,
        heads: Option<&[ChangeHash]>,
    ) -> Result<Vec<(FieldValue, ObjId)>> {
        let obj = self.obj(section);
        let all = match heads {
            Some(h) => self.doc.get_all_at(obj, key, h)?,
            None => self.doc.get_all(obj, key)?,
        };
        Ok(all
            .into_iter()
            .filter_map(|(v, id)| match v {
                Value::Scalar(s) => FieldValue::from_scalar(&s).map(|fv| (fv, id)),
                Value::Object(_) => None,
            })
            .collect())
    }

    pub(crate) fn candidates(
        &self,
        section: Section,
        key: &str,
        heads: Option<&[ChangeHash]>,
    ) -> Result<Vec<Candidate>> {
        Ok(self
            .raw_candidates(section, key, heads)?
            .into_iter()
            .map(|(value, id)| Candidate {
                value,
                kind: actor_of(&id)
                    .map(AuthorKind::of_actor)
                    .unwrap_or(AuthorKind::Fleet),
            })
            .collect())
    }

    pub(crate) fn keys(&self, section: Section, heads: Option<&[ChangeHash]>) -> Vec<String> {
        let obj = self.obj(section);
        match heads {
            Some(h) => self.doc.keys_at(obj, h).collect(),
            None => self.doc.keys(obj).collect(),
        }
    }

    /// The resolved value of one field.
    pub fn field(&self, path: &FieldPath) -> Result<Option<FieldValue>> {
        Ok(resolve(
            policy_for(path),
            &self.candidates(path.section, &path.key, None)?,
        ))
    }

    /// Every field of a section with its resolved value, at `heads` or now.
    pub fn fields_at(
        &self,
        section: Section,
        heads: Option<&[ChangeHash]>,
    ) -> Result<BTreeMap<String, FieldValue>> {
        let mut out = BTreeMap::new();
        for key in self.keys(section, heads) {
            let path = FieldPath::new(section, key);
            if let Some(v) = resolve(
                policy_for(&path),
                &self.candidates(section, &path.key, heads)?,
            ) {
                out.insert(path.key, v);
            }
        }
        Ok(out)
    }

    /// Every field of a section with its resolved value.
    pub fn fields(&self, section: Section) -> Result<BTreeMap<String, FieldValue>> {
        self.fields_at(section, None)
    }

    /// The desired config, each field resolved by its policy. An error names a
    /// field whose value has the wrong type or is out of range.
    pub fn desired(&self) -> Result<DesiredConfig> {
        DesiredConfig::from_fields(&self.fields(Section::Desired)?)
    }

    /// The reported state, each field resolved by its policy.
    pub fn reported(&self) -> Result<Reported> {
        Ok(Reported::from_fields(&self.fields(Section::Reported)?))
    }

    /// The device description kept in `meta`.
    pub fn meta(&self) -> Result<DeviceInfo> {
        let f = self.fields(Section::Meta)?;
        let s = |k: &str| match f.get(k) {
            Some(FieldValue::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let model = s("model")
            .and_then(|m| m.parse::<BoardModel>().ok())
            .unwrap_or(BoardModel::Generic);
        let prefixed = |p: &str| -> BTreeMap<String, String> {
            f.iter()
                .filter_map(|(k, v)| match (k.strip_prefix(p), v) {
                    (Some(rest), FieldValue::Str(s)) => Some((rest.to_owned(), s.clone())),
                    _ => None,
                })
                .collect()
        };
        let loc = prefixed("location.");
        Ok(DeviceInfo {
            id: self.device.clone(),
            model,
            serial: s("serial"),
            firmware_version: s("firmware_version"),
            agent_version: s("agent_version"),
            labels: prefixed("label."),
            location: Location {
                site: loc.get("site").cloned(),
                rack: loc.get("rack").cloned(),
                shelf: loc.get("shelf").cloned(),
                slot: loc.get("slot").cloned(),
            },
            group: s("group").and_then(|g| GroupId::new(g).ok()),
        })
    }

    /// Writes the device description into `meta` (one change, only what differs).
    pub fn set_meta(
        &mut self,
        info: &DeviceInfo,
        author: &Author,
        now: Timestamp,
    ) -> Result<Option<ChangeHash>> {
        if info.id != self.device {
            return Err(Error::WrongDevice {
                ours: self.device.to_string(),
                theirs: info.id.to_string(),
            });
        }
        let mut want: BTreeMap<String, FieldValue> = BTreeMap::new();
        want.insert("model".into(), info.model.as_str().into());
        let opt = [
            ("serial", &info.serial),
            ("firmware_version", &info.firmware_version),
            ("agent_version", &info.agent_version),
            ("location.site", &info.location.site),
            ("location.rack", &info.location.rack),
            ("location.shelf", &info.location.shelf),
            ("location.slot", &info.location.slot),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                want.insert(k.into(), v.as_str().into());
            }
        }
        if let Some(g) = &info.group {
            want.insert("group".into(), g.as_str().into());
        }
        for (k, v) in &info.labels {
            want.insert(format!("label.{k}"), v.as_str().into());
        }
        let current = self.fields(Section::Meta)?;
        let writes = diff(Section::Meta, &current, &want);
        self.write(author, now, Some("meta".into()), writes)
    }

    /// Edits the desired config: `f` gets the current resolved config and changes
    /// it; every field that differs afterwards is written in **one** change by
    /// `author`. Returns the change hash, or `None` when nothing changed.
    ///
    /// This does not validate; the fleet uses [`Twin::edit_desired_checked`].
    pub fn edit_desired(
        &mut self,
        f: impl FnOnce(&mut DesiredConfig),
        author: &Author,
        now: Timestamp,
    ) -> Result<Option<ChangeHash>> {
        let before = self.desired()?;
        let mut after = before.clone();
        f(&mut after);
        let current = self.fields(Section::Desired)?;
        let mut writes = diff(Section::Desired, &before.to_fields(), &after.to_fields());
        // Keys the typed view does not show (unknown to this version) are kept.
        writes.retain(|(p, v)| v.is_some() || current.contains_key(&p.key));
        let summary = summary_of(&writes);
        self.write(author, now, Some(format!("desired: {summary}")), writes)
    }

    /// Like [`Twin::edit_desired`], but the resulting config must pass `validator`
    /// first; a refused config is not written and the error carries the reason.
    pub fn edit_desired_checked(
        &mut self,
        f: impl FnOnce(&mut DesiredConfig),
        validator: &dyn ConfigValidator,
        author: &Author,
        now: Timestamp,
    ) -> Result<Option<ChangeHash>> {
        let mut after = self.desired()?;
        f(&mut after);
        validator.validate(&after).map_err(Error::Rejected)?;
        self.edit_desired(move |d| *d = after, author, now)
    }

    /// Sets (or, with `None`, deletes) one raw field in one change. For repairs and
    /// tools; the key must belong to the schema of its section.
    pub fn set_field(
        &mut self,
        path: &FieldPath,
        value: Option<FieldValue>,
        author: &Author,
        now: Timestamp,
    ) -> Result<Option<ChangeHash>> {
        if path.section == Section::Desired && !DesiredConfig::is_known_key(&path.key) {
            return Err(Error::UnknownField(path.key.clone()));
        }
        self.write(
            author,
            now,
            Some(format!("set {path}")),
            vec![(path.clone(), value)],
        )
    }

    /// Writes what the device reports this tick, as **one** change (or none).
    ///
    /// Discrete state is written when it differs; readings only when they leave
    /// their deadband and their minimum interval has passed (see
    /// [`ReportPolicy`]). A device at rest therefore adds no history. Returns
    /// whether a change was made.
    pub fn report(&mut self, update: &ReportedUpdate, now: Timestamp) -> Result<bool> {
        let current = self.fields(Section::Reported)?;
        let mut writes: Vec<FieldWrite> = update
            .discrete_fields(&current)
            .into_iter()
            .map(|(k, v)| (FieldPath::reported(k), v))
            .collect();
        let mut written_readings = Vec::new();
        for (name, value) in &update.readings {
            let key = format!("{P_READING}{name}");
            let due = match current.get(&key).and_then(FieldValue::as_f64) {
                None => true,
                Some(old) => {
                    let moved = (value - old).abs() >= self.report_policy.deadband(name)
                        || old.is_nan() != value.is_nan();
                    let rested = self.last_report.get(name).is_none_or(|t| {
                        now.saturating_since(*t) >= self.report_policy.min_interval
                    });
                    moved && rested
                }
            };
            if due {
                writes.push((FieldPath::reported(key), Some(FieldValue::Float(*value))));
                written_readings.push(name.clone());
            }
        }
        let local = self.local.clone();
        let changed = self.write(&local, now, None, writes)?.is_some();
        if changed {
            for name in written_readings {
                self.last_report.insert(name, now);
            }
        }
        Ok(changed)
    }

    /// The device's check of its desired config on receipt: the config must decode,
    /// have no open `manual` conflict and pass `validator`. The verdict is written
    /// to `reported` (`config.version`, `config.accepted`, `config.rejection`) in
    /// one change when it differs from what is there. The caller applies the
    /// config only on [`ConfigVerdict::Accepted`].
    pub fn evaluate_desired(
        &mut self,
        validator: &dyn ConfigValidator,
        now: Timestamp,
    ) -> Result<ConfigVerdict> {
        let fields = self.fields(Section::Desired)?;
        let version = match fields.get("config_version") {
            Some(FieldValue::Int(v)) if *v >= 0 => *v as u64,
            _ => 0,
        };
        let open: Vec<String> = self
            .conflicts()?
            .into_iter()
            .filter(|c| c.field.section == Section::Desired && c.policy == FieldPolicy::Manual)
            .map(|c| c.field.key)
            .collect();
        let verdict = if !open.is_empty() {
            ConfigVerdict::Rejected(Rejection::new(
                "open_conflict",
                format!("unresolved manual conflict on {}", open.join(", ")),
            ))
        } else {
            match DesiredConfig::from_fields(&fields) {
                Err(e) => ConfigVerdict::Rejected(Rejection::new("invalid_field", e.to_string())),
                Ok(cfg) => match validator.validate(&cfg) {
                    Ok(()) => ConfigVerdict::Accepted(cfg),
                    Err(r) => ConfigVerdict::Rejected(r),
                },
            }
        };
        let status = match &verdict {
            ConfigVerdict::Accepted(_) => ConfigStatus {
                version,
                accepted: true,
                rejection: None,
            },
            ConfigVerdict::Rejected(r) => ConfigStatus {
                version,
                accepted: false,
                rejection: Some(r.clone()),
            },
        };
        self.report(
            &ReportedUpdate {
                config: Some(status),
                ..Default::default()
            },
            now,
        )?;
        Ok(verdict)
    }

    /// Fields that currently hold several different concurrent values, in every
    /// section, with each value's author. The ones with the `manual` policy stay
    /// until [`Twin::resolve`]; the others are shown resolved by their policy and
    /// disappear with the next write of the field.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        let registry = self.registry();
        let mut out = Vec::new();
        for section in Section::ALL {
            for key in self.keys(section, None) {
                let raw = self.raw_candidates(section, &key, None)?;
                if raw.len() < 2 {
                    continue;
                }
                let mut values: Vec<(FieldValue, Author)> = raw
                    .iter()
                    .map(|(v, id)| (v.clone(), author_of(&registry, id)))
                    .collect();
                values.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
                let distinct = values.windows(2).any(|w| !w[0].0.same(&w[1].0));
                if !distinct {
                    continue;
                }
                let field = FieldPath::new(section, key);
                let policy = policy_for(&field);
                let visible = resolve(policy, &self.candidates(section, &field.key, None)?);
                out.push(Conflict {
                    field,
                    policy,
                    values,
                    visible,
                });
            }
        }
        Ok(out)
    }

    /// Resolves a conflict by writing the chosen value; the write supersedes every
    /// concurrent value on every peer that receives it.
    pub fn resolve(
        &mut self,
        field: &FieldPath,
        value: FieldValue,
        author: &Author,
        now: Timestamp,
    ) -> Result<ChangeHash> {
        let hash = self.write_forced(
            author,
            now,
            Some(format!("resolve {field}")),
            vec![(field.clone(), Some(value))],
        )?;
        Ok(hash)
    }

    /// The history of this epoch, oldest first.
    pub fn history(&mut self) -> Result<Vec<Version>> {
        let registry = self.registry();
        let changes = self.doc.get_changes(&[]);
        Ok(changes
            .into_iter()
            .map(|c| {
                let kind = AuthorKind::of_actor(c.actor_id());
                let author = registry
                    .get(c.actor_id())
                    .cloned()
                    .unwrap_or_else(|| Author::new(kind, c.actor_id().to_hex_string()));
                let summary = match c.message() {
                    Some(m) => m.to_owned(),
                    None => {
                        let keys: BTreeSet<String> = c
                            .decode()
                            .operations
                            .iter()
                            .filter_map(|op| match &op.key {
                                automerge::legacy::Key::Map(k) => Some(k.to_string()),
                                automerge::legacy::Key::Seq(_) => None,
                            })
                            .collect();
                        format!("set {}", keys.into_iter().collect::<Vec<_>>().join(", "))
                    }
                };
                Version {
                    hash: c.hash(),
                    author,
                    at: Timestamp::from_millis(c.timestamp()),
                    summary,
                }
            })
            .collect())
    }

    /// Returns `desired` to its state at version `to` by writing the old values as
    /// a new change (history is never rewritten). `reported` and `meta` are left
    /// alone: they are facts, not intentions.
    pub fn rollback(
        &mut self,
        to: &[ChangeHash],
        author: &Author,
        now: Timestamp,
    ) -> Result<Option<ChangeHash>> {
        for h in to {
            if self.doc.get_change_by_hash(h).is_none() {
                return Err(Error::UnknownVersion(h.to_string()));
            }
        }
        let old = self.fields_at(Section::Desired, Some(to))?;
        let current = self.fields(Section::Desired)?;
        let writes = diff(Section::Desired, &current, &old);
        let label = to
            .iter()
            .map(|h| h.to_string()[..12].to_owned())
            .collect::<Vec<_>>()
            .join(",");
        self.write(author, now, Some(format!("rollback to {label}")), writes)
    }

    /// actor -> author, from the twin's registry.
    pub(crate) fn registry(&self) -> HashMap<ActorId, Author> {
        self.doc
            .map_range(&self.actors_obj, ..)
            .filter_map(|item| {
                let actor = ActorId::from(hex_decode(&item.key)?.as_slice());
                let name = match item.value.into_value() {
                    Value::Scalar(s) => match FieldValue::from_scalar(&s) {
                        Some(FieldValue::Str(s)) => Author::decode(&s),
                        _ => None,
                    },
                    Value::Object(_) => None,
                }?;
                Some((actor, name))
            })
            .collect()
    }

    pub(crate) fn actor_for(&mut self, author: &Author) -> Result<ActorId> {
        if let Some(a) = self.actors.get(author) {
            return Ok(a.clone());
        }
        let actor = new_actor(author.kind);
        self.actors.insert(author.clone(), actor.clone());
        Ok(actor)
    }

    /// Writes fields as one change by `author`, skipping writes that would not
    /// change anything. Returns the change hash, or `None` when nothing was written.
    pub(crate) fn write(
        &mut self,
        author: &Author,
        now: Timestamp,
        message: Option<String>,
        writes: Vec<FieldWrite>,
    ) -> Result<Option<ChangeHash>> {
        let mut effective = Vec::new();
        for (path, value) in writes {
            let cands = self.raw_candidates(path.section, &path.key, None)?;
            let noop = match &value {
                None => cands.is_empty(),
                Some(v) => cands.len() == 1 && cands[0].0.same(v),
            };
            if !noop {
                effective.push((path, value));
            }
        }
        if effective.is_empty() {
            return Ok(None);
        }
        self.commit_writes(author, now, message, effective)
            .map(Some)
    }

    fn write_forced(
        &mut self,
        author: &Author,
        now: Timestamp,
        message: Option<String>,
        writes: Vec<FieldWrite>,
    ) -> Result<ChangeHash> {
        self.commit_writes(author, now, message, writes)
    }

    pub(crate) fn commit_writes(
        &mut self,
        author: &Author,
        now: Timestamp,
        message: Option<String>,
        writes: Vec<FieldWrite>,
    ) -> Result<ChangeHash> {
        self.commit_inner(author, now, message, writes, &BTreeMap::new())
    }

    /// One change by `author`: registry entry if new, field writes, `prev` entries.
    pub(crate) fn commit_inner(
        &mut self,
        author: &Author,
        now: Timestamp,
        message: Option<String>,
        writes: Vec<FieldWrite>,
        prev: &BTreeMap<String, FieldValue>,
    ) -> Result<ChangeHash> {
        let actor = self.actor_for(author)?;
        self.doc.set_actor(actor.clone());
        let hex = actor.to_hex_string();
        if self.doc.get(&self.actors_obj, hex.as_str())?.is_none() {
            let obj = self.actors_obj.clone();
            self.doc.put(&obj, hex.as_str(), author.encode())?;
        }
        for (path, value) in writes {
            let obj = self.obj(path.section).clone();
            match value {
                Some(v) => self.doc.put(&obj, path.key.as_str(), v.to_scalar())?,
                None => {
                    if self.doc.get(&obj, path.key.as_str())?.is_some() {
                        self.doc.delete(&obj, path.key.as_str())?;
                    }
                }
            }
        }
        for (k, v) in prev {
            let obj = self.prev_obj.clone();
            self.doc.put(&obj, k.as_str(), v.to_scalar())?;
        }
        let mut opts = CommitOptions::default().with_time(now.as_millis());
        if let Some(m) = message {
            opts = opts.with_message(m);
        }
        let hash = self.doc.commit_with(opts);
        // A commit with no operations (everything was a no-op) makes no change.
        hash.map_or_else(
            || {
                self.doc
                    .get_heads()
                    .first()
                    .copied()
                    .ok_or_else(|| Error::Schema("document has no heads".into()))
            },
            Ok,
        )
    }

    /// Replaces the document with another twin's (epoch change), keeping the
    /// local author and the report policy.
    pub(crate) fn replace_doc(&mut self, next: Twin) {
        self.doc = next.doc;
        self.epoch = next.epoch;
        self.sections = next.sections;
        self.actors_obj = next.actors_obj;
        self.prev_obj = next.prev_obj;
        self.actors = next.actors;
        self.saved_heads = next.saved_heads;
    }

    /// Values of the `prev` map (epoch bookkeeping).
    pub(crate) fn prev_entries(&self) -> Vec<(String, Vec<FieldValue>)> {
        let keys: Vec<String> = self.doc.keys(&self.prev_obj).collect();
        keys.into_iter()
            .map(|k| {
                let vals = self
                    .doc
                    .get_all(&self.prev_obj, k.as_str())
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(v, _)| match v {
                        Value::Scalar(s) => FieldValue::from_scalar(&s),
                        Value::Object(_) => None,
                    })
                    .collect();
                (k, vals)
            })
            .collect()
    }
}

pub(crate) fn author_of(registry: &HashMap<ActorId, Author>, id: &ObjId) -> Author {
    match actor_of(id) {
        Some(a) => registry
            .get(a)
            .cloned()
            .unwrap_or_else(|| Author::new(AuthorKind::of_actor(a), a.to_hex_string())),
        None => Author::new(AuthorKind::Genesis, "root"),
    }
}

/// Writes that turn `from` into `to` (puts for new or changed keys, deletes for
/// keys that disappear).
pub(crate) fn diff(
    section: Section,
    from: &BTreeMap<String, FieldValue>,
    to: &BTreeMap<String, FieldValue>,
) -> Vec<FieldWrite> {
    let mut w = Vec::new();
    for (k, v) in to {
        if from.get(k).is_none_or(|old| !old.same(v)) {
            w.push((FieldPath::new(section, k.clone()), Some(v.clone())));
        }
    }
    for k in from.keys() {
        if !to.contains_key(k) {
            w.push((FieldPath::new(section, k.clone()), None));
        }
    }
    w
}

fn summary_of(writes: &[FieldWrite]) -> String {
    writes
        .iter()
        .map(|(p, _)| p.key.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
