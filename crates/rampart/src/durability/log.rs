//! The spool's storage: one segmented, append-only log per shard, in its own directory.
//!
//! ```text
//! dir/
//!   00000000000000000001.seg   records 1..      (a segment is named by its first sequence)
//!   00000000000000004097.seg   records 4097..   (the active one: appends go here)
//!   acked                      checkpoint: two slots of (sequence, crc32); the higher valid
//!                              one is the last sequence the server acknowledged
//! record = len: u32 LE (of what follows the crc) | crc32: u32 LE (of what follows it)
//!        | seq: u64 LE | unix ms: u64 LE | payload
//! ```
//!
//! Appends are written together and made durable with one `fdatasync` (group commit: the
//! caller hands over every entry that waits, and acknowledges them only after
//! [`SpoolLog::append`] returns). A record whose length or checksum does not hold at the end
//! of the last segment is a torn tail from a crash mid-write: [`SpoolLog::open`] cuts the
//! segment there, so it is never replayed; a bad record anywhere else is corruption and
//! opening fails. The checkpoint file has two slots (sequence + CRC32 each), written in
//! turn with one `fdatasync` per acknowledgement, so a torn write leaves the other slot
//! whole; segments wholly at or below it are deleted. Entries are replayed from the
//! checkpoint on, so a crash between a server's acknowledgement and the checkpoint replays at
//! most the entries acknowledged since the last checkpoint (the caller checkpoints after each
//! entry: at most one entry twice). Any I/O error while appending or checkpointing stops the
//! log for good (an fsync that failed may have dropped the written pages: nothing written
//! since the last good fsync can be trusted); the caller must then fail writes.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of a record before its payload: length, checksum, sequence, time.
pub const HEADER: usize = 4 + 4 + 8 + 8;
/// A segment is closed and a new one started once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest payload one record takes (a request is bounded by the pool's `max_bulk_len`
/// and the session's limits long before this).
pub const MAX_PAYLOAD: usize = 1 << 30;

const CHECKPOINT: &str = "acked";

/// Why the spool cannot do what was asked.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SpoolError {
    /// Appending would pass `max_bytes` of entries not yet acknowledged by the server.
    #[error("spool {dir} is full ({used} of {max} bytes)")]
    Full {
        /// The spool's directory.
        dir: String,
        /// Bytes of entries waiting.
        used: u64,
        /// The bound.
        max: u64,
    },
    /// A write, fsync or checkpoint failed earlier: the spool takes nothing more.
    #[error("spool {dir} is stopped: {reason}")]
    Stopped {
        /// The spool's directory.
        dir: String,
        /// The first error.
        reason: String,
    },
    /// Opening found a damaged record that is not the torn tail of the last segment.
    #[error("spool {dir}: {file} is damaged at byte {offset}")]
    Corrupt {
        /// The spool's directory.
        dir: String,
        /// The segment file.
        file: String,
        /// Where its first bad record starts.
        offset: u64,
    },
    /// The directory or a file could not be read or created.
    #[error("spool {dir}: {reason}")]
    Io {
        /// The spool's directory.
        dir: String,
        /// The error.
        reason: String,
    },
}

/// One entry read back for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence number (from 1, increasing by one).
    pub seq: u64,
    /// When it was appended, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The bytes given to [`SpoolLog::append`].
    pub payload: Vec<u8>,
}

/// What [`SpoolLog::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Entries waiting for replay (after the checkpoint).
    pub entries: u64,
    /// Bytes cut from the end of the last segment (a torn tail), 0 when it was whole.
    pub torn_bytes: u64,
}

struct Segment {
    path: PathBuf,
    len: u64,
    /// Last sequence in it (`first - 1` when empty).
    last: u64,
}

/// A shard's spool on disk (see the module documentation). Not shared: one owner calls it,
/// from a thread that may block.
pub struct SpoolLog {
    dir: PathBuf,
    /// The bound, shared with the [`crate::durability::spool::Spool`] that a reload updates.
    max_bytes: Arc<AtomicU64>,
    segments: VecDeque<Segment>,
    active: Option<File>,
    next_seq: u64,
    acked: u64,
    /// Payload bytes and time of each waiting entry, oldest first (for the bound and age).
    waiting: VecDeque<(u64, u64, u64)>,
    waiting_bytes: u64,
    stopped: Option<String>,
    /// The checkpoint slot written last (the next ack writes the other one).
    slot: u64,
}

impl SpoolLog {
    /// The bound on payload bytes waiting for replay, shared: a store changes it for the
    /// next append (entries already waiting stay).
    pub fn max_bytes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.max_bytes)
    }

    /// Opens (or creates) the spool in `dir`, cutting a torn tail, bounded by `max_bytes` of
    /// payload waiting for replay.
    ///
    /// # Errors
    /// [`SpoolError::Io`] if the directory or its files cannot be read or created;
    /// [`SpoolError::Corrupt`] for a damaged record that is not a torn tail.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(SpoolLog, Recovery), SpoolError> {
        let io_err = |e: io::Error| SpoolError::Io {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let acked = read_checkpoint(dir).map_err(io_err)?;
        let mut firsts: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut log = SpoolLog {
            dir: dir.to_path_buf(),
            max_bytes: Arc::new(AtomicU64::new(max_bytes)),
            segments: VecDeque::new(),
            active: None,
            next_seq: acked + 1,
            acked,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            stopped: None,
            slot: 0,
        };
        let mut rec = Recovery::default();
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let path = dir.join(segment_name(first));
            let last_segment = i + 1 == count;
            let (len, last) = log.scan(&path, first, last_segment, &mut rec)?;
            log.next_seq = log.next_seq.max(last + 1);
            log.segments.push_back(Segment { path, len, last });
        }
        rec.entries = log.waiting.len() as u64;
        log.drop_acked_segments().map_err(io_err)?;
        Ok((log, rec))
    }

    /// Reads one segment, noting the entries after the checkpoint; returns its good length
    /// and last sequence. A bad record ends the last segment (cut there) and fails any other.
    fn scan(
        &mut self,
        path: &Path,
        first: u64,
        last_segment: bool,
        rec: &mut Recovery,
    ) -> Result<(u64, u64), SpoolError> {
        let dir = self.dir.display().to_string();
        let io_err = |e: io::Error| SpoolError::Io {
            dir: dir.clone(),
            reason: format!("{}: {e}", path.display()),
        };
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err)?;
        let mut at = 0usize;
        let mut last = first.saturating_sub(1);
        while at < bytes.len() {
            match decode(&bytes[at..]) {
                Some((seq, unix_ms, payload, n)) if seq == last + 1 => {
                    if seq > self.acked {
                        self.wait_for(seq, payload.len() as u64, unix_ms);
                    }
                    last = seq;
                    at += n;
                }
                _ if last_segment && !record_follows(&bytes, at, last) => {
                    rec.torn_bytes = (bytes.len() - at) as u64;
                    let f = OpenOptions::new().write(true).open(path).map_err(io_err)?;
                    f.set_len(at as u64).map_err(io_err)?;
                    f.sync_all().map_err(io_err)?;
                    break;
                }
                _ => {
                    return Err(SpoolError::Corrupt {
                        dir: dir.clone(),
                        file: path.display().to_string(),
                        offset: at as u64,
                    })
                }
            }
        }
        Ok((at as u64, last))
    }

    fn wait_for(&mut self, seq: u64, bytes: u64, unix_ms: u64) {
        self.waiting.push_back((seq, bytes, unix_ms));
        self.waiting_bytes += bytes;
    }

    /// Appends `payloads` as consecutive entries and makes them durable with one
    /// `fdatasync`; returns the sequence of the first. All or none: over `max_bytes`
    /// nothing is written.
    ///
    /// # Errors
    /// [`SpoolError::Full`] over the bound (the spool goes on); [`SpoolError::Stopped`] if
    /// this or an earlier write, fsync or checkpoint failed (the spool takes nothing more;
    /// entries of the failed call must not be acknowledged).
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<u64, SpoolError> {
        self.check_running()?;
        let adding: u64 = payloads.iter().map(|p| p.len() as u64).sum();
        let max = self.max_bytes.load(Ordering::Relaxed);
        if self.waiting_bytes + adding > max || payloads.iter().any(|p| p.len() > MAX_PAYLOAD) {
            return Err(SpoolError::Full {
                dir: self.dir.display().to_string(),
                used: self.waiting_bytes,
                max,
            });
        }
        let first = self.next_seq;
        let now = crate::clock::unix_ms();
        let mut buf = Vec::with_capacity(payloads.len() * HEADER + adding as usize);
        for (i, p) in payloads.iter().enumerate() {
            encode(&mut buf, first + i as u64, now, p);
        }
        if let Err(e) = self.write_durably(first, &buf) {
            return Err(self.stop(e));
        }
        for (i, p) in payloads.iter().enumerate() {
            self.wait_for(first + i as u64, p.len() as u64, now);
        }
        self.next_seq = first + payloads.len() as u64;
        if let Some(seg) = self.segments.back_mut() {
            seg.len += buf.len() as u64;
            seg.last = self.next_seq - 1;
        }
        Ok(first)
    }

    fn write_durably(&mut self, first: u64, buf: &[u8]) -> io::Result<()> {
        let full = self.segments.back().is_none_or(|s| s.len >= SEGMENT_BYTES);
        if full || self.active.is_none() {
            self.open_active(first, full)?;
        }
        let f = self
            .active
            .as_mut()
            .ok_or_else(|| io::Error::other("no segment"))?;
        f.write_all(buf)?;
        f.sync_data()
    }

    /// Opens the last segment for appending, or (`new`) starts one at `first`.
    fn open_active(&mut self, first: u64, new: bool) -> io::Result<()> {
        if new {
            let path = self.dir.join(segment_name(first));
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            sync_dir(&self.dir)?;
            self.segments.push_back(Segment {
                path,
                len: 0,
                last: first - 1,
            });
            self.active = Some(f);
        } else if let Some(seg) = self.segments.back() {
            let mut f = OpenOptions::new().write(true).open(&seg.path)?;
            f.seek(SeekFrom::Start(seg.len))?;
            self.active = Some(f);
        }
        Ok(())
    }

    /// Up to `max` waiting entries, oldest first, from sequence `from` on (at least the
    /// first waiting one).
    ///
    /// # Errors
    /// [`SpoolError::Io`] if a segment cannot be read back.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<Entry>, SpoolError> {
        let from = from.max(self.acked + 1);
        let mut out = Vec::new();
        for seg in self.segments.iter().filter(|s| s.last >= from) {
            let mut bytes = Vec::new();
            File::open(&seg.path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| SpoolError::Io {
                    dir: self.dir.display().to_string(),
                    reason: format!("{}: {e}", seg.path.display()),
                })?;
            let mut at = 0usize;
            let end = (seg.len as usize).min(bytes.len());
            while at < end && out.len() < max {
                let Some((seq, unix_ms, payload, n)) = decode(&bytes[at..end]) else {
                    break;
                };
                if seq >= from {
                    out.push(Entry {
                        seq,
                        unix_ms,
                        payload: payload.to_vec(),
                    });
                }
                at += n;
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// The server acknowledged every entry up to `seq`: record it durably and delete
    /// segments wholly at or below it.
    ///
    /// # Errors
    /// [`SpoolError::Stopped`] when the checkpoint cannot be written (the spool stops).
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.check_running()?;
        let seq = seq.min(self.next_seq - 1);
        if seq <= self.acked {
            return Ok(());
        }
        self.slot ^= 1;
        if let Err(e) = write_checkpoint(&self.dir, seq, self.slot) {
            return Err(self.stop(e));
        }
        self.acked = seq;
        while let Some(&(s, bytes, _)) = self.waiting.front() {
            if s > seq {
                break;
            }
            self.waiting.pop_front();
            self.waiting_bytes -= bytes;
        }
        if let Err(e) = self.drop_acked_segments() {
            return Err(self.stop(e));
        }
        Ok(())
    }

    fn drop_acked_segments(&mut self) -> io::Result<()> {
        // The active (last) segment stays: appends go on there.
        while self.segments.len() > 1 && self.segments[0].last <= self.acked {
            if let Some(seg) = self.segments.pop_front() {
                fs::remove_file(&seg.path)?;
            }
        }
        Ok(())
    }

    /// Entries waiting for replay, their payload bytes, and the append time (Unix ms) of the
    /// oldest.
    pub fn waiting(&self) -> (u64, u64, Option<u64>) {
        (
            self.waiting.len() as u64,
            self.waiting_bytes,
            self.waiting.front().map(|w| w.2),
        )
    }

    /// Why the spool stopped, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    fn check_running(&self) -> Result<(), SpoolError> {
        match &self.stopped {
            Some(reason) => Err(SpoolError::Stopped {
                dir: self.dir.display().to_string(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn stop(&mut self, e: io::Error) -> SpoolError {
        let reason = self.stopped.get_or_insert_with(|| e.to_string()).clone();
        self.active = None;
        SpoolError::Stopped {
            dir: self.dir.display().to_string(),
            reason,
        }
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// Appends one record to `buf`.
fn encode(buf: &mut Vec<u8>, seq: u64, unix_ms: u64, payload: &[u8]) {
    let body_len = 16 + payload.len();
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&unix_ms.to_le_bytes());
    h.update(payload);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&h.finalize().to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&unix_ms.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The record at the start of `bytes`: (seq, unix ms, payload, its length in bytes); `None`
/// when it is short or its checksum does not hold.
fn decode(bytes: &[u8]) -> Option<(u64, u64, &[u8], usize)> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let body_len = usize::try_from(word(0)?).ok()?;
    if !(16..=16 + MAX_PAYLOAD).contains(&body_len) {
        return None;
    }
    let crc = word(4)?;
    let body = bytes.get(8..8 + body_len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let unix_ms = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    Some((seq, unix_ms, &body[16..], 8 + body_len))
}

/// Whether a whole record later than `last` starts anywhere after `at`: then the bad bytes
/// at `at` are damage inside the log, not a torn tail (a crash tears only what was written
/// after the last fsync, which is the end of the file).
fn record_follows(bytes: &[u8], at: usize, last: u64) -> bool {
    (at + 1..bytes.len().saturating_sub(HEADER - 1))
        .any(|i| decode(&bytes[i..]).is_some_and(|(seq, ..)| seq > last))
}

/// The checkpoint file holds two slots of `seq: u64 LE | crc32: u32 LE`, written in turn,
/// so a write torn by a power cut leaves the other slot whole; the higher valid one counts.
const SLOT: usize = 12;

fn read_checkpoint(dir: &Path) -> io::Result<u64> {
    let bytes = match fs::read(dir.join(CHECKPOINT)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let slot = |i: usize| -> Option<u64> {
        let s = bytes.get(i * SLOT..(i + 1) * SLOT)?;
        let seq = u64::from_le_bytes(s[..8].try_into().ok()?);
        let crc = u32::from_le_bytes(s[8..].try_into().ok()?);
        (crc32fast::hash(&s[..8]) == crc).then_some(seq)
    };
    match (slot(0), slot(1)) {
        (None, None) if bytes.is_empty() => Ok(0),
        (None, None) => Err(io::Error::other("checkpoint file 'acked' is damaged")),
        (a, b) => Ok(a.unwrap_or(0).max(b.unwrap_or(0))),
    }
}

fn slot_bytes(seq: u64) -> Vec<u8> {
    let mut b = seq.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
    b
}

/// Write `seq` into checkpoint slot `slot` (0 or 1) and `fdatasync` it (the file is created
/// with both slots at 0, and its directory synced, on first use).
fn write_checkpoint(dir: &Path, seq: u64, slot: u64) -> io::Result<()> {
    let path = dir.join(CHECKPOINT);
    let new = !path.exists();
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)?;
    if new {
        f.write_all(&[slot_bytes(0), slot_bytes(0)].concat())?;
        f.sync_all()?;
        sync_dir(dir)?;
    }
    f.seek(SeekFrom::Start(slot * SLOT as u64))?;
    f.write_all(&slot_bytes(seq))?;
    f.sync_data()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$3\r\n{i:03}\r\n").into_bytes())
            .collect()
    }

    fn append_all(log: &mut SpoolLog, p: &[Vec<u8>]) -> u64 {
        let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
        log.append(&refs).expect("append")
    }

    #[test]
    fn entries_survive_reopen_in_order_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = payloads(10);
        {
            let (mut log, rec) = SpoolLog::open(dir.path(), 1 << 20).expect("open");
            assert_eq!(rec, Recovery::default());
            assert_eq!(append_all(&mut log, &p[..4]), 1);
            assert_eq!(append_all(&mut log, &p[4..]), 5);
            log.ack(3).expect("ack");
        }
        let (log, rec) = SpoolLog::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(rec.entries, 7);
        let got = log.read(0, 100).expect("read");
        let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (4..=10).collect::<Vec<_>>());
        assert_eq!(got[0].payload, p[3]);
        assert_eq!(log.waiting().0, 7);
    }

    #[test]
    fn a_torn_tail_is_cut_and_never_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = payloads(5);
        let seg = {
            let (mut log, _) = SpoolLog::open(dir.path(), 1 << 20).expect("open");
            append_all(&mut log, &p);
            log.segments[0].path.clone()
        };
        let whole = fs::read(&seg).expect("read");
        let one = whole.len() / 5;
        // Every cut inside the last record (and a flipped byte in it) loses only that record.
        for cut in [
            whole.len() - 1,
            whole.len() - one + 3,
            whole.len() - one + 1,
        ] {
            fs::write(&seg, &whole[..cut]).expect("write");
            let (log, rec) = SpoolLog::open(dir.path(), 1 << 20).expect("reopen");
            assert_eq!(rec.entries, 4, "cut at {cut}");
            assert_eq!(rec.torn_bytes, (cut - 4 * one) as u64);
            assert_eq!(fs::metadata(&seg).expect("meta").len(), (4 * one) as u64);
            assert_eq!(log.read(0, 10).expect("read").len(), 4);
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x55;
        fs::write(&seg, &flipped).expect("write");
        let (mut log, rec) = SpoolLog::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!((rec.entries, rec.torn_bytes), (4, one as u64));
        assert_eq!(
            append_all(&mut log, &p[..1]),
            5,
            "the cut sequence is used again"
        );
    }

    #[test]
    fn damage_before_the_tail_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = {
            let (mut log, _) = SpoolLog::open(dir.path(), 1 << 20).expect("open");
            append_all(&mut log, &payloads(3));
            log.segments[0].path.clone()
        };
        let mut bytes = fs::read(&seg).expect("read");
        bytes[HEADER + 2] ^= 1;
        fs::write(&seg, &bytes).expect("write");
        // The first record is damaged and whole records follow: not a torn tail.
        match SpoolLog::open(dir.path(), 1 << 20) {
            Err(SpoolError::Corrupt { offset, .. }) => assert_eq!(offset, 0),
            other => panic!("expected Corrupt, got {:?}", other.map(|(_, r)| r)),
        }
        assert_eq!(
            fs::read(&seg).expect("read"),
            bytes,
            "nothing was cut from a damaged log"
        );
    }

    #[test]
    fn over_max_bytes_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = payloads(3);
        let bound = (p[0].len() * 2) as u64;
        let (mut log, _) = SpoolLog::open(dir.path(), bound).expect("open");
        append_all(&mut log, &p[..2]);
        let err = log.append(&[&p[2]]).expect_err("full");
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        assert!(err.to_string().contains("is full"), "{err}");
        log.ack(1).expect("ack");
        assert_eq!(log.append(&[&p[2]]).expect("room again"), 3);
    }

    #[test]
    fn a_failed_write_stops_the_spool_for_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = SpoolLog::open(dir.path(), 1 << 20).expect("open");
        append_all(&mut log, &payloads(1));
        // A disk that refuses the next write (ENOSPC), as a failing fsync would.
        log.active = Some(
            OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        );
        let err = log.append(&[b"x"]).expect_err("refused");
        assert!(matches!(err, SpoolError::Stopped { .. }), "{err}");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
        assert_eq!(log.waiting().0, 1, "the refused entry is not counted");
        let again = log.append(&[b"y"]).expect_err("stays stopped");
        assert_eq!(again, err);
        assert!(log.ack(1).is_err(), "no checkpoint either");
    }

    #[test]
    fn acknowledged_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = SpoolLog::open(dir.path(), 1 << 30).expect("open");
        append_all(&mut log, &payloads(2));
        // Force a second segment.
        if let Some(s) = log.segments.back_mut() {
            s.len = SEGMENT_BYTES;
        }
        append_all(&mut log, &payloads(2));
        assert_eq!(log.segments.len(), 2);
        log.ack(2).expect("ack");
        assert_eq!(log.segments.len(), 1);
        assert!(log.segments[0].path.ends_with(segment_name(3)));
        assert_eq!(log.read(0, 10).expect("read").len(), 2);
    }
}
