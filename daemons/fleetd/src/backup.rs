//! `fleetd backup --to FILE` and `fleetd restore --from FILE`.
//!
//! A backup is one file holding a consistent copy of every store in the data
//! directory, taken while fleetd runs: each SQLite file (`fleet.db`, the twin
//! store, `telemetry.db`, any other) is copied with `VACUUM INTO`, which reads one
//! snapshot in a read transaction (WAL writers go on meanwhile; the copy is
//! compacted and has no WAL). Other regular files are copied as they are. Each
//! file's copy is consistent; the files are taken one after the other, not at one
//! instant across files.
//!
//! Format (version 1):
//!
//! ```text
//! "WRALE-FLEETD-BACKUP\n"     magic
//! u32 LE                      length of the manifest
//! manifest                    JSON: {format, fleetd_version, created_at, files: [{name, kind, size, sha256}]}
//! file bodies                 in manifest order, `size` bytes each, nothing after
//! ```
//!
//! Restore verifies the whole file (sizes and SHA-256 of every file, SQLite
//! `quick_check`) into a staging directory before it touches the data directory;
//! it refuses a non-empty data directory unless forced, and then moves the old
//! contents aside into `.replaced-<ms>/` rather than deleting them. fleetd must be
//! stopped while it restores.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wrale_core::Timestamp;

use crate::config::Config;
use crate::state::now;

/// The first bytes of a backup file.
pub const MAGIC: &[u8] = b"WRALE-FLEETD-BACKUP\n";
/// The format this fleetd writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const MAX_MANIFEST: u32 = 16 << 20;
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
const STAGING_PREFIX: &str = ".restore-";
const REPLACED_PREFIX: &str = ".replaced-";

/// How a file was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A SQLite database, copied with `VACUUM INTO`.
    Sqlite,
    /// Any other file, copied as it is.
    File,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Path relative to the data directory, `/`-separated.
    pub name: String,
    /// How it was captured.
    pub kind: FileKind,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The fleetd that wrote it.
    pub fleetd_version: String,
    /// When.
    pub created_at: Timestamp,
    /// The files, in the order their bodies follow.
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// Total bytes of the files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    if getrandom::fill(&mut b).is_err() {
        return format!("{}", now().as_millis());
    }
    hex(&b)
}

/// Files to back up under `dir` (relative paths, sorted), skipping SQLite side
/// files and restore leftovers.
fn list_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let here = root.join(rel);
        let mut entries: Vec<_> = fs::read_dir(&here)
            .with_context(|| format!("cannot list {}", here.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", here.display()))?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for e in entries {
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                bail!("{}: file name is not UTF-8", e.path().display());
            };
            let skip = ["-wal", "-shm", "-journal"]
                .iter()
                .any(|s| name.ends_with(s))
                || name.starts_with(STAGING_PREFIX)
                || name.starts_with(REPLACED_PREFIX);
            if skip {
                continue;
            }
            let ty = e.file_type()?;
            if ty.is_dir() {
                walk(root, &rel.join(name), out)?;
            } else if ty.is_file() {
                out.push(rel.join(name));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, Path::new(""), &mut out)?;
    Ok(out)
}

fn is_sqlite(path: &Path) -> bool {
    let mut head = [0u8; 16];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == SQLITE_HEADER)
}

fn rel_name(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Copies a SQLite database consistently (`VACUUM INTO`), with fleetd running.
fn snapshot_sqlite(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let conn = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", src.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute("VACUUM INTO ?1", [dst.to_string_lossy().as_ref()])
        .with_context(|| format!("cannot snapshot {}", src.display()))?;
    Ok(())
}

fn hash_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&h.finalize())))
}

/// Writes a backup of `config.data.dir` to `to` (fleetd may be running).
pub fn backup(config: &Config, to: &Path) -> anyhow::Result<()> {
    let m = backup_dir(&config.data.dir, to)?;
    tracing::info!(
        to = %to.display(),
        files = m.files.len(),
        bytes = m.total_bytes(),
        "backup written"
    );
    Ok(())
}

/// Writes a backup of the data directory `dir` to `to` (replaced atomically if it
/// exists) and returns its manifest.
pub fn backup_dir(dir: &Path, to: &Path) -> anyhow::Result<Manifest> {
    if !dir.is_dir() {
        bail!("data dir {} does not exist", dir.display());
    }
    let files = list_files(dir)?;
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stage = parent.join(format!(".fleetd-backup-{}", random_suffix()));
    fs::create_dir_all(&stage).with_context(|| format!("cannot create {}", stage.display()))?;
    let result = (|| {
        let mut manifest = Manifest {
            format: FORMAT_VERSION,
            fleetd_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at: now(),
            files: Vec::new(),
        };
        let mut staged = Vec::new();
        for (i, rel) in files.iter().enumerate() {
            let src = dir.join(rel);
            let dst = stage.join(format!("{i}"));
            let kind = if is_sqlite(&src) {
                snapshot_sqlite(&src, &dst)?;
                FileKind::Sqlite
            } else {
                fs::copy(&src, &dst).with_context(|| format!("cannot copy {}", src.display()))?;
                FileKind::File
            };
            let (size, sha256) = hash_file(&dst)?;
            manifest.files.push(ManifestFile {
                name: rel_name(rel),
                kind,
                size,
                sha256,
            });
            staged.push(dst);
        }
        let json = serde_json::to_vec(&manifest)?;
        let partial = stage.join("backup.partial");
        {
            let mut out = BufWriter::new(
                File::create(&partial)
                    .with_context(|| format!("cannot create {}", partial.display()))?,
            );
            out.write_all(MAGIC)?;
            out.write_all(&(json.len() as u32).to_le_bytes())?;
            out.write_all(&json)?;
            for p in &staged {
                std::io::copy(&mut File::open(p)?, &mut out)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        fs::rename(&partial, to).with_context(|| format!("cannot write {}", to.display()))?;
        Ok(manifest)
    })();
    let _cleanup = fs::remove_dir_all(&stage);
    result
}

fn read_manifest(r: &mut impl Read) -> anyhow::Result<Manifest> {
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic)
        .context("not a fleetd backup: too short")?;
    if magic != MAGIC {
        bail!("not a fleetd backup: the file does not start with {MAGIC:?}");
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .context("backup cut off in the manifest")?;
    let len = u32::from_le_bytes(len);
    if len > MAX_MANIFEST {
        bail!("backup manifest of {len} bytes is larger than the limit {MAX_MANIFEST}");
    }
    let mut json = vec![0u8; len as usize];
    r.read_exact(&mut json)
        .context("backup cut off in the manifest")?;
    let m: Manifest = serde_json::from_slice(&json).context("backup manifest is not valid")?;
    if m.format != FORMAT_VERSION {
        bail!(
            "backup format {} (written by fleetd {}) is not supported by this fleetd {} (format {FORMAT_VERSION})",
            m.format,
            m.fleetd_version,
            env!("CARGO_PKG_VERSION")
        );
    }
    for f in &m.files {
        let p = Path::new(&f.name);
        let safe = !f.name.is_empty()
            && p.components().all(|c| matches!(c, Component::Normal(_)))
            && !f.name.starts_with(STAGING_PREFIX);
        if !safe {
            bail!("backup names an unsafe path {:?}", f.name);
        }
    }
    Ok(m)
}

/// Reads and verifies a backup without restoring it: its manifest when every file
/// has its size and checksum.
pub fn verify(from: &Path) -> anyhow::Result<Manifest> {
    let mut r = BufReader::new(
        File::open(from).with_context(|| format!("cannot open {}", from.display()))?,
    );
    let m = read_manifest(&mut r)?;
    for f in &m.files {
        copy_verified(&mut r, f, &mut std::io::sink())?;
    }
    ensure_end(&mut r)?;
    Ok(m)
}

fn ensure_end(r: &mut impl Read) -> anyhow::Result<()> {
    let mut extra = [0u8; 1];
    if r.read(&mut extra)? != 0 {
        bail!("backup has trailing bytes after the last file");
    }
    Ok(())
}

fn copy_verified(r: &mut impl Read, f: &ManifestFile, out: &mut impl Write) -> anyhow::Result<()> {
    let mut h = Sha256::new();
    let mut left = f.size;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            bail!(
                "backup cut off in {} ({} of {} bytes)",
                f.name,
                f.size - left,
                f.size
            );
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let got = hex(&h.finalize());
    if got != f.sha256 {
        bail!(
            "checksum mismatch in {}: the backup is damaged (sha256 {got}, manifest {})",
            f.name,
            f.sha256
        );
    }
    Ok(())
}

/// Restores a backup into `config.data.dir`, which must be empty or missing
/// unless `force` (see [`restore_dir`]).
pub fn restore(config: &Config, from: &Path, force: bool) -> anyhow::Result<()> {
    let m = restore_dir(from, &config.data.dir, force)?;
    tracing::info!(
        from = %from.display(),
        files = m.files.len(),
        bytes = m.total_bytes(),
        "backup restored"
    );
    Ok(())
}

/// Restores a backup into `dir`. A non-empty `dir` is refused unless `force`; then
/// its contents are moved into `dir/.replaced-<ms>/`. Everything is verified before
/// `dir` is changed. fleetd must not be running on `dir`.
pub fn restore_dir(from: &Path, dir: &Path, force: bool) -> anyhow::Result<Manifest> {
    let mut r = BufReader::new(
        File::open(from).with_context(|| format!("cannot open {}", from.display()))?,
    );
    let m = read_manifest(&mut r)?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let existing: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    if !existing.is_empty() && !force {
        bail!(
            "data dir {} is not empty ({} entries); restore into an empty directory, or pass --force to move its contents aside",
            dir.display(),
            existing.len()
        );
    }
    let stage = dir.join(format!("{STAGING_PREFIX}{}", random_suffix()));
    fs::create_dir(&stage).with_context(|| format!("cannot create {}", stage.display()))?;
    let staged = (|| {
        for f in &m.files {
            let dst = stage.join(&f.name);
            if let Some(p) = dst.parent() {
                fs::create_dir_all(p)?;
            }
            let mut out = BufWriter::new(File::create(&dst)?);
            copy_verified(&mut r, f, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            if f.kind == FileKind::Sqlite {
                let conn = Connection::open_with_flags(&dst, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                let check: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
                if check != "ok" {
                    bail!(
                        "{} in the backup fails SQLite's quick_check: {check}",
                        f.name
                    );
                }
            }
        }
        ensure_end(&mut r)
    })();
    if let Err(e) = staged {
        let _cleanup = fs::remove_dir_all(&stage);
        return Err(e);
    }
    if !existing.is_empty() {
        let aside = dir.join(format!("{REPLACED_PREFIX}{}", now().as_millis()));
        fs::create_dir(&aside).with_context(|| format!("cannot create {}", aside.display()))?;
        for e in existing {
            let to = aside.join(e.file_name());
            fs::rename(e.path(), &to)
                .with_context(|| format!("cannot move {} aside", e.path().display()))?;
        }
        tracing::info!(aside = %aside.display(), "previous data dir contents moved aside");
    }
    let mut top: Vec<String> = m
        .files
        .iter()
        .filter_map(|f| f.name.split('/').next().map(str::to_owned))
        .collect();
    top.sort();
    top.dedup();
    for name in top {
        fs::rename(stage.join(&name), dir.join(&name))
            .with_context(|| format!("cannot move {name} into {}", dir.display()))?;
    }
    fs::remove_dir_all(&stage).with_context(|| format!("cannot remove {}", stage.display()))?;
    if let Ok(d) = File::open(dir) {
        let _best_effort = d.sync_all();
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("fleetd-backup-{}", random_suffix()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn db(path: &Path, rows: i64) {
        let c = Connection::open(path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            .unwrap();
        for i in 0..rows {
            c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
    }

    fn rows(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn round_trip_with_an_open_writer_and_refusals() {
        let root = tmp();
        let data = root.join("data");
        fs::create_dir_all(data.join("sub")).unwrap();
        db(&data.join("fleet.db"), 10);
        // A connection holding uncheckpointed WAL content, as a running fleetd does.
        let live = Connection::open(data.join("telemetry.db")).unwrap();
        live.pragma_update(None, "journal_mode", "WAL").unwrap();
        live.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        live.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        for i in 0..50 {
            live.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        fs::write(data.join("sub/note.txt"), b"hello").unwrap();
        let file = root.join("b.wbak");
        let m = backup_dir(&data, &file).unwrap();
        let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["fleet.db", "sub/note.txt", "telemetry.db"]);
        assert_eq!(m.files[0].kind, FileKind::Sqlite);
        assert_eq!(m.files[1].kind, FileKind::File);
        assert_eq!(verify(&file).unwrap(), m);

        let fresh = root.join("fresh");
        restore_dir(&file, &fresh, false).unwrap();
        assert_eq!(rows(&fresh.join("fleet.db")), 10);
        assert_eq!(rows(&fresh.join("telemetry.db")), 50);
        assert_eq!(fs::read(fresh.join("sub/note.txt")).unwrap(), b"hello");
        assert!(!fs::read_dir(&fresh).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
        }));

        // Non-empty: refused without force, moved aside with it.
        let e = restore_dir(&file, &fresh, false).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("--force"), "{e}");
        db(&fresh.join("fleet.db"), 5);
        restore_dir(&file, &fresh, true).unwrap();
        assert_eq!(rows(&fresh.join("fleet.db")), 10);
        let aside: Vec<_> = fs::read_dir(&fresh)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(REPLACED_PREFIX))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(rows(&fresh.join(&aside[0]).join("fleet.db")), 15);
        drop(live);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn damaged_backups_are_refused_before_anything_changes() {
        let root = tmp();
        let data = root.join("data");
        fs::create_dir_all(&data).unwrap();
        db(&data.join("fleet.db"), 100);
        let file = root.join("b.wbak");
        backup_dir(&data, &file).unwrap();
        let good = fs::read(&file).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 0xff;
        fs::write(&file, &flipped).unwrap();
        let target = root.join("t1");
        let e = restore_dir(&file, &target, false).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch in fleet.db"), "{e}");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0);

        fs::write(&file, &good[..good.len() - 1]).unwrap();
        let e = verify(&file).unwrap_err().to_string();
        assert!(e.contains("cut off"), "{e}");

        let mut extra = good.clone();
        extra.push(0);
        fs::write(&file, &extra).unwrap();
        assert!(verify(&file).unwrap_err().to_string().contains("trailing"));

        fs::write(&file, b"hello").unwrap();
        assert!(
            verify(&file)
                .unwrap_err()
                .to_string()
                .contains("not a fleetd backup")
        );

        // A manifest naming a path outside the data dir.
        let m = Manifest {
            format: FORMAT_VERSION,
            fleetd_version: "x".into(),
            created_at: now(),
            files: vec![ManifestFile {
                name: "../evil".into(),
                kind: FileKind::File,
                size: 0,
                sha256: hex(&Sha256::digest(b"")),
            }],
        };
        let json = serde_json::to_vec(&m).unwrap();
        let mut evil = MAGIC.to_vec();
        evil.extend_from_slice(&(json.len() as u32).to_le_bytes());
        evil.extend_from_slice(&json);
        fs::write(&file, &evil).unwrap();
        let e = restore_dir(&file, &root.join("t2"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsafe path"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
