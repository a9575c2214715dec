//! A bounded on-disk ring buffer of records that survives restarts.
//!
//! Records live in numbered segment files (`seg-<n>.log`) in one directory, each
//! record framed as `[len u32 LE][crc32 u32 LE][bytes]` and fsynced. When the ring
//! holds `max_segments` full segments, the oldest segment is deleted and its unread
//! records are added to the `dropped` counter (oldest first). The read cursor and
//! the counter live in a small `state` file replaced atomically (write, fsync,
//! rename). On open, a torn record at the end of the last segment (a crash during
//! a write) is cut off; every record whose append returned is kept.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const HEADER: u64 = 8;
/// Largest record accepted.
pub const MAX_RECORD: usize = 1 << 20;

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}
static CRC: [u32; 256] = crc_table();

/// CRC-32 (IEEE).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for b in data {
        c = CRC[((c ^ u32::from(*b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

/// Where the next unread record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    /// Segment number.
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

/// The ring buffer.
#[derive(Debug)]
pub struct RingBuffer {
    dir: PathBuf,
    segment_bytes: u64,
    max_segments: usize,
    segments: VecDeque<u64>,
    tail: File,
    tail_len: u64,
    read: Cursor,
    dropped: u64,
    unread: u64,
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:012}.log"))
}

/// Records of a segment, each with the offset just after it.
type Records = Vec<(Vec<u8>, u64)>;

/// Reads the records of a segment from `from`; returns them with their end
/// offsets and the end of the last valid record.
fn scan(path: &Path, from: u64) -> Result<(Records, u64)> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    let mut pos = from as usize;
    let mut out = Vec::new();
    while pos + HEADER as usize <= buf.len() {
        let len = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
        let start = pos + HEADER as usize;
        let Some(data) = buf.get(start..start + len) else {
            break;
        };
        if len > MAX_RECORD || crc32(data) != crc {
            break;
        }
        pos = start + len;
        out.push((data.to_vec(), pos as u64));
    }
    Ok((out, pos as u64))
}

impl RingBuffer {
    /// Opens (or creates) a ring in `dir` holding at most `max_segments` segments of
    /// about `segment_bytes` each.
    pub fn open(dir: impl AsRef<Path>, segment_bytes: u64, max_segments: usize) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if max_segments < 2 || segment_bytes < 64 {
            return Err(Error::Telemetry(
                "ring needs at least 2 segments of 64 bytes".into(),
            ));
        }
        fs::create_dir_all(&dir)?;
        let mut ids: Vec<u64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            ids.push(0);
            File::create(seg_path(&dir, 0))?.sync_all()?;
            sync_dir(&dir)?;
        }
        let (mut read, dropped) = read_state(&dir)?;
        let first = ids[0];
        if read.segment < first {
            read = Cursor {
                segment: first,
                offset: 0,
            };
        }
        let last = *ids.last().unwrap_or(&0);
        // Cut a torn record off the tail segment.
        let (_, valid_end) = scan(&seg_path(&dir, last), 0)?;
        let tail = OpenOptions::new()
            .read(true)
            .write(true)
            .open(seg_path(&dir, last))?;
        if tail.metadata()?.len() != valid_end {
            tail.set_len(valid_end)?;
            tail.sync_all()?;
        }
        let mut ring = RingBuffer {
            dir,
            segment_bytes,
            max_segments,
            segments: ids.into_iter().collect(),
            tail,
            tail_len: valid_end,
            read,
            dropped,
            unread: 0,
        };
        ring.unread = ring.count_from(ring.read)?;
        Ok(ring)
    }

    fn count_from(&self, c: Cursor) -> Result<u64> {
        let mut n = 0;
        for &s in self.segments.iter().filter(|s| **s >= c.segment) {
            let from = if s == c.segment { c.offset } else { 0 };
            n += scan(&seg_path(&self.dir, s), from)?.0.len() as u64;
        }
        Ok(n)
    }

    /// Records not yet acknowledged.
    pub fn len(&self) -> u64 {
        self.unread
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.unread == 0
    }

    /// Records dropped because the ring was full, since it was created.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends a record durably (fsync before returning), dropping the oldest
    /// segment when the ring is full.
    pub fn push(&mut self, record: &[u8]) -> Result<()> {
        if record.len() > MAX_RECORD {
            return Err(Error::Telemetry(format!(
                "record of {} bytes exceeds {MAX_RECORD}",
                record.len()
            )));
        }
        let need = HEADER + record.len() as u64;
        if self.tail_len > 0 && self.tail_len + need > self.segment_bytes {
            self.roll()?;
        }
        let mut frame = Vec::with_capacity(need as usize);
        frame.extend_from_slice(&(record.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32(record).to_le_bytes());
        frame.extend_from_slice(record);
        self.tail.seek(SeekFrom::Start(self.tail_len))?;
        self.tail.write_all(&frame)?;
        self.tail.sync_data()?;
        self.tail_len += need;
        self.unread += 1;
        Ok(())
    }

    fn roll(&mut self) -> Result<()> {
        let next = self.segments.back().map_or(0, |s| s + 1);
        while self.segments.len() >= self.max_segments {
            let Some(oldest) = self.segments.pop_front() else {
                break;
            };
            if self.read.segment <= oldest {
                let from = if self.read.segment == oldest {
                    self.read.offset
                } else {
                    0
                };
                let lost = scan(&seg_path(&self.dir, oldest), from)?.0.len() as u64;
                self.dropped += lost;
                self.unread -= lost.min(self.unread);
                self.read = Cursor {
                    segment: oldest + 1,
                    offset: 0,
                };
                // Persist the counter before the data disappears.
                write_state(&self.dir, self.read, self.dropped)?;
            }
            fs::remove_file(seg_path(&self.dir, oldest))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(seg_path(&self.dir, next))?;
        f.sync_all()?;
        sync_dir(&self.dir)?;
        self.segments.push_back(next);
        self.tail = f;
        self.tail_len = 0;
        Ok(())
    }

    /// Up to `max` unread records, oldest first, and the cursor just after them
    /// (pass it to [`RingBuffer::ack`] once they are safely delivered).
    pub fn peek(&self, max: usize) -> Result<(Vec<Vec<u8>>, Cursor)> {
        let mut out = Vec::new();
        let mut cursor = self.read;
        for &s in self.segments.iter().filter(|s| **s >= self.read.segment) {
            if out.len() >= max {
                break;
            }
            let from = if s == self.read.segment {
                self.read.offset
            } else {
                0
            };
            let (recs, _) = scan(&seg_path(&self.dir, s), from)?;
            for (r, end) in recs {
                if out.len() >= max {
                    break;
                }
                out.push(r);
                cursor = Cursor {
                    segment: s,
                    offset: end,
                };
            }
        }
        Ok((out, cursor))
    }

    /// Marks everything before `cursor` as delivered (durably) and deletes
    /// segments that are fully read.
    pub fn ack(&mut self, cursor: Cursor) -> Result<()> {
        if cursor <= self.read {
            return Ok(());
        }
        let acked = self.count_between(self.read, cursor)?;
        self.read = cursor;
        self.unread -= acked.min(self.unread);
        write_state(&self.dir, self.read, self.dropped)?;
        while self.segments.len() > 1 && self.segments[0] < self.read.segment {
            if let Some(s) = self.segments.pop_front() {
                fs::remove_file(seg_path(&self.dir, s))?;
            }
        }
        Ok(())
    }

    fn count_between(&self, a: Cursor, b: Cursor) -> Result<u64> {
        Ok(self.count_from(a)? - self.count_from(b)?)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn read_state(dir: &Path) -> Result<(Cursor, u64)> {
    let Ok(b) = fs::read(dir.join("state")) else {
        return Ok((Cursor::default(), 0));
    };
    if b.len() != 28 || crc32(&b[..24]) != u32::from_le_bytes([b[24], b[25], b[26], b[27]]) {
        return Err(Error::Telemetry("ring state file is corrupt".into()));
    }
    let word = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    Ok((
        Cursor {
            segment: word(0),
            offset: word(8),
        },
        word(16),
    ))
}

fn write_state(dir: &Path, c: Cursor, dropped: u64) -> Result<()> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&c.segment.to_le_bytes());
    b.extend_from_slice(&c.offset.to_le_bytes());
    b.extend_from_slice(&dropped.to_le_bytes());
    let crc = crc32(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("state.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&b)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join("state"))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn survives_restart_and_acks() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut r = RingBuffer::open(dir.path(), 256, 4).unwrap();
            for i in 0..10u8 {
                r.push(&[i; 20]).unwrap();
            }
            let (recs, c) = r.peek(3).unwrap();
            assert_eq!(recs, vec![vec![0u8; 20], vec![1u8; 20], vec![2u8; 20]]);
            r.ack(c).unwrap();
            assert_eq!(r.len(), 7);
        }
        let r = RingBuffer::open(dir.path(), 256, 4).unwrap();
        assert_eq!(r.len(), 7);
        assert_eq!(r.peek(1).unwrap().0, vec![vec![3u8; 20]]);
        assert_eq!(r.dropped(), 0);
    }

    #[test]
    fn full_ring_drops_oldest_first_and_counts_persistently() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = RingBuffer::open(dir.path(), 100, 3).unwrap();
        // 3 records of 28+8 bytes per 100-byte segment (2 fit), 3 segments max.
        for i in 0..20u8 {
            r.push(&[i; 28]).unwrap();
        }
        let dropped = r.dropped();
        assert!(dropped > 0);
        assert_eq!(r.len() + dropped, 20);
        let (recs, _) = r.peek(100).unwrap();
        assert_eq!(
            recs.first().map(|x| x[0]),
            Some(dropped as u8),
            "oldest dropped first"
        );
        assert_eq!(recs.last().map(|x| x[0]), Some(19));
        drop(r);
        let r = RingBuffer::open(dir.path(), 100, 3).unwrap();
        assert_eq!(r.dropped(), dropped);
        assert_eq!(r.len() + dropped, 20);
    }

    #[test]
    fn torn_tail_record_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut r = RingBuffer::open(dir.path(), 4096, 4).unwrap();
            r.push(b"one").unwrap();
            r.push(b"two").unwrap();
        }
        // Simulate a crash in the middle of a third append.
        let seg = seg_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'x']).unwrap();
        drop(f);
        let mut r = RingBuffer::open(dir.path(), 4096, 4).unwrap();
        assert_eq!(r.len(), 2);
        r.push(b"three").unwrap();
        let (recs, _) = r.peek(10).unwrap();
        assert_eq!(
            recs,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    }
}
