//! One shard's spool as the proxy uses it: a thread that owns the [`SpoolLog`], so fsyncs
//! never block a worker, and group commit: every append waiting when the thread is free is
//! written and made durable by one `fdatasync`, then each waiter hears back.
//!
//! Workers and the replayer talk to it through a bounded channel ([`QUEUE`] operations;
//! beyond it an append fails at once). [`Spool::waiting`] counts an entry from the moment
//! its append is asked for until the server acknowledged it, so a write that comes later
//! can see that the shard's spool is not empty and wait behind it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::durability::log::{Entry, Recovery, SpoolError, SpoolLog};

/// Operations queued for a spool's thread at most; one more append fails at once.
pub const QUEUE: usize = 16 * 1024;
/// Most appends made durable by one `fdatasync`.
const GROUP: usize = 1024;

enum Op {
    Append(Vec<u8>, oneshot::Sender<Result<u64, SpoolError>>),
    Read(u64, usize, oneshot::Sender<Result<Vec<Entry>, SpoolError>>),
    Ack(u64, oneshot::Sender<Result<(), SpoolError>>),
}

/// Figures of one spool, read by INFO, /metrics and the page.
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Entries appended or being appended and not yet acknowledged by the server.
    pub entries: AtomicU64,
    /// Their payload bytes (entries on disk only).
    pub bytes: AtomicU64,
    /// Append time of the oldest waiting entry, Unix ms (0: none).
    pub oldest_ms: AtomicU64,
    /// Entries made durable since start.
    pub appended: AtomicU64,
    /// Entries replayed and acknowledged by the server since start.
    pub replayed: AtomicU64,
    /// Of those, ones the server answered with an error (logged; they leave the spool).
    pub replay_errors: AtomicU64,
    /// Appends refused (full, stopped, queue full).
    pub refused: AtomicU64,
    /// Set when the spool stopped for good.
    pub stopped: AtomicBool,
}

/// A shard's spool, shared by every worker and the replayer.
pub struct Spool {
    dir: PathBuf,
    tx: SyncSender<Op>,
    /// Its figures.
    pub stats: Arc<SpoolStats>,
    stop_reason: Arc<Mutex<Option<String>>>,
    /// `spool_max_bytes`, shared with the log's thread (a reload sets it).
    max_bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl Spool {
    /// A reload's `spool_max_bytes`: the bound of the next append (entries already waiting
    /// stay, even above it).
    pub fn set_max_bytes(&self, max: u64) {
        self.max_bytes.store(max, Relaxed);
    }

    /// Opens the spool in `dir` (bounded by `max_bytes` of waiting payload) and starts its
    /// thread. A spool that cannot be opened is returned stopped, with the reason: every
    /// append fails with it, and nothing is replayed.
    pub fn open(dir: &Path, max_bytes: u64) -> (Arc<Spool>, Result<Recovery, SpoolError>) {
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(SpoolStats::default());
        let stop_reason = Arc::new(Mutex::new(None));
        let opened = SpoolLog::open(dir, max_bytes);
        let mut limit = Arc::new(std::sync::atomic::AtomicU64::new(max_bytes));
        let recovery = match opened {
            Ok((log, rec)) => {
                limit = log.max_bytes();
                stats.entries.store(log.waiting().0, Relaxed);
                publish(&log, &stats);
                let (st, sr) = (Arc::clone(&stats), Arc::clone(&stop_reason));
                let spawned = std::thread::Builder::new()
                    .name("rampart-spool".into())
                    .spawn(move || run(log, rx, st, sr));
                match spawned {
                    Ok(_) => Ok(rec),
                    Err(e) => Err(SpoolError::Io {
                        dir: dir.display().to_string(),
                        reason: format!("cannot start its thread: {e}"),
                    }),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &recovery {
            stats.stopped.store(true, Relaxed);
            if let Ok(mut r) = stop_reason.lock() {
                *r = Some(e.to_string());
            }
        }
        let spool = Arc::new(Spool {
            dir: dir.to_path_buf(),
            tx,
            stats,
            stop_reason,
            max_bytes: limit,
        });
        (spool, recovery)
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries waiting (being appended, on disk or being replayed).
    pub fn waiting(&self) -> u64 {
        self.stats.entries.load(Relaxed)
    }

    /// Why the spool stopped, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.stop_reason.lock().ok().and_then(|r| r.clone())
    }

    fn stopped_error(&self) -> SpoolError {
        SpoolError::Stopped {
            dir: self.dir.display().to_string(),
            reason: self.stopped().unwrap_or_else(|| "its thread ended".into()),
        }
    }

    /// Append `bytes` as one entry; resolves once it is durable (its sequence) or refused.
    /// The entry counts as waiting from this call on.
    pub fn append(
        &self,
        bytes: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<u64, SpoolError>> + use<> {
        let (tx, rx) = oneshot::channel();
        self.stats.entries.fetch_add(1, Relaxed);
        let sent = self.tx.try_send(Op::Append(bytes, tx));
        let early = match sent {
            Ok(()) => None,
            Err(TrySendError::Full(_)) => Some(SpoolError::Full {
                dir: self.dir.display().to_string(),
                used: self.stats.bytes.load(Relaxed),
                max: 0,
            }),
            Err(TrySendError::Disconnected(_)) => Some(self.stopped_error()),
        };
        let stats = Arc::clone(&self.stats);
        let gone = self.stopped_error();
        async move {
            let r = match early {
                Some(e) => Err(e),
                None => rx.await.unwrap_or(Err(gone)),
            };
            if r.is_err() {
                stats.entries.fetch_sub(1, Relaxed);
                stats.refused.fetch_add(1, Relaxed);
            }
            r
        }
    }

    /// Up to `max` waiting entries from sequence `from` on, oldest first.
    ///
    /// # Errors
    /// The spool stopped or a segment cannot be read.
    pub async fn read(&self, from: u64, max: usize) -> Result<Vec<Entry>, SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Op::Read(from, max, tx)).await?;
        rx.await.unwrap_or_else(|_| Err(self.stopped_error()))
    }

    /// The server acknowledged entry `seq` (and every earlier one): checkpoint it.
    ///
    /// # Errors
    /// The checkpoint could not be written: the spool stopped.
    pub async fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Op::Ack(seq, tx)).await?;
        rx.await.unwrap_or_else(|_| Err(self.stopped_error()))
    }

    /// Queue `op` for the thread without blocking the runtime: while the queue is full (a
    /// burst of appends), wait a millisecond and try again.
    async fn submit(&self, mut op: Op) -> Result<(), SpoolError> {
        loop {
            match self.tx.try_send(op) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    op = back;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(self.stopped_error()),
            }
        }
    }
}

/// Copy the log's byte and age figures to `stats` (entries are counted as they are asked
/// for and acknowledged).
fn publish(log: &SpoolLog, stats: &SpoolStats) {
    let (_, bytes, oldest) = log.waiting();
    stats.bytes.store(bytes, Relaxed);
    stats.oldest_ms.store(oldest.unwrap_or(0), Relaxed);
}

fn run(
    mut log: SpoolLog,
    rx: Receiver<Op>,
    stats: Arc<SpoolStats>,
    stop_reason: Arc<Mutex<Option<String>>>,
) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut appends = Vec::new();
        for op in ops {
            match op {
                Op::Append(bytes, tx) => appends.push((bytes, tx)),
                Op::Read(from, max, tx) => {
                    let _ = tx.send(log.read(from, max));
                }
                Op::Ack(seq, tx) => {
                    let before = log.waiting().0;
                    let r = log.ack(seq);
                    let gone = before.saturating_sub(log.waiting().0);
                    stats.entries.fetch_sub(gone, Relaxed);
                    stats.replayed.fetch_add(gone, Relaxed);
                    let _ = tx.send(r);
                }
            }
        }
        if !appends.is_empty() {
            let payloads: Vec<&[u8]> = appends.iter().map(|(b, _)| b.as_slice()).collect();
            let r = log.append(&payloads);
            if r.is_ok() {
                stats.appended.fetch_add(appends.len() as u64, Relaxed);
            }
            for (i, (_, tx)) in appends.into_iter().enumerate() {
                let _ = tx.send(r.clone().map(|first| first + i as u64));
            }
        }
        publish(&log, &stats);
        if let Some(reason) = log.stopped() {
            stats.stopped.store(true, Relaxed);
            if let Ok(mut r) = stop_reason.lock() {
                r.get_or_insert_with(|| reason.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_are_durable_before_they_resolve_and_counted_until_acked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, opened) = Spool::open(dir.path(), 1 << 20);
        assert_eq!(opened.expect("open").entries, 0);
        let a = spool.append(b"one".to_vec());
        let b = spool.append(b"two".to_vec());
        assert_eq!(spool.waiting(), 2, "counted as soon as asked for");
        assert_eq!((a.await.expect("a"), b.await.expect("b")), (1, 2));
        let read = spool.read(0, 10).await.expect("read");
        assert_eq!(read.len(), 2);
        spool.ack(1).await.expect("ack");
        assert_eq!(spool.waiting(), 1);
        assert_eq!(spool.stats.appended.load(Relaxed), 2);
        drop(spool);
        let (again, opened) = Spool::open(dir.path(), 1 << 20);
        assert_eq!(opened.expect("reopen").entries, 1, "survives a restart");
        assert_eq!(again.read(0, 10).await.expect("read")[0].payload, b"two");
    }

    #[tokio::test]
    async fn a_spool_that_cannot_open_refuses_writes_naming_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let (spool, opened) = Spool::open(&file, 1 << 20);
        assert!(opened.is_err());
        let err = spool.append(b"x".to_vec()).await.expect_err("stopped");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
        assert_eq!(spool.waiting(), 0);
        assert!(spool.stopped().is_some());
    }
}
