//! The log file of `-o/--output`, reopened on SIGUSR1 and SIGHUP so logrotate can move it
//! away, and the log level, raised by SIGTTIN and lowered by SIGTTOU as in nutcracker.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::{reload, EnvFilter, Registry};

struct Inner {
    path: PathBuf,
    file: Mutex<File>,
}

static CURRENT: OnceLock<Arc<Inner>> = OnceLock::new();

/// A writer to the log file; every clone writes to the file as reopened last.
#[derive(Clone)]
pub struct LogWriter(Arc<Inner>);

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Open `path` for appending and make it the file [`reopen`] reopens.
///
/// # Errors
/// The file cannot be opened.
pub fn open(path: &Path) -> io::Result<LogWriter> {
    let inner = Arc::new(Inner {
        path: path.to_path_buf(),
        file: Mutex::new(open_append(path)?),
    });
    let _ = CURRENT.set(Arc::clone(&inner));
    Ok(LogWriter(inner))
}

/// Whether logs go to a file (`-o`), which [`reopen`] reopens.
pub fn has_file() -> bool {
    CURRENT.get().is_some()
}

/// Open the log file's path again (after logrotate renamed it). Nothing to do without `-o`.
///
/// # Errors
/// The path cannot be opened; the old file stays in use.
pub fn reopen() -> io::Result<()> {
    let Some(inner) = CURRENT.get() else {
        return Ok(());
    };
    let fresh = open_append(&inner.path)?;
    if let Ok(mut f) = inner.file.lock() {
        *f = fresh;
    }
    Ok(())
}

/// The levels SIGTTIN and SIGTTOU step through, least verbose first.
const LEVELS: [LevelFilter; 5] = [
    LevelFilter::ERROR,
    LevelFilter::WARN,
    LevelFilter::INFO,
    LevelFilter::DEBUG,
    LevelFilter::TRACE,
];

/// The installed log filter and its level's index in [`LEVELS`].
struct LevelControl {
    handle: reload::Handle<EnvFilter, Registry>,
    index: Mutex<usize>,
}

static LEVEL: OnceLock<LevelControl> = OnceLock::new();

/// Makes `handle` the filter that [`step_level`] changes; `initial` is its most verbose
/// level (for a `RAMPART_LOG` filter, its `max_level_hint`). The first call wins.
pub fn install_level_control(handle: reload::Handle<EnvFilter, Registry>, initial: LevelFilter) {
    let index = LEVELS
        .iter()
        .position(|l| *l == initial)
        .unwrap_or(if initial == LevelFilter::OFF { 0 } else { 2 });
    let _ = LEVEL.set(LevelControl {
        handle,
        index: Mutex::new(index),
    });
}

/// Which way [`step_level`] moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// One level more verbose (SIGTTIN), up to trace.
    Up,
    /// One level less verbose (SIGTTOU), down to error.
    Down,
}

/// Moves the log level one step (error, warn, info, debug, trace) and returns the new level,
/// which is also the old one at either end. The whole filter becomes that one level: the
/// per-module directives of `RAMPART_LOG` are dropped.
///
/// # Errors
/// Without [`install_level_control`], or if the subscriber is gone, a message saying so.
pub fn step_level(step: Step) -> Result<LevelFilter, String> {
    let control = LEVEL
        .get()
        .ok_or("the log level cannot be changed: no log filter installed")?;
    let mut index = control
        .index
        .lock()
        .map_err(|_| "the log level is being changed elsewhere")?;
    let next = match step {
        Step::Up => (*index + 1).min(LEVELS.len() - 1),
        Step::Down => index.saturating_sub(1),
    };
    let level = LEVELS[next];
    control
        .handle
        .reload(EnvFilter::default().add_directive(level.into()))
        .map_err(|e| format!("cannot change the log level: {e}"))?;
    *index = next;
    Ok(level)
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.file.lock() {
            Ok(mut f) => f.write(buf),
            Err(_) => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.0.file.lock() {
            Ok(mut f) => f.flush(),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_follows_a_rotated_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.log");
        let mut w = open(&path).expect("open");
        w.write_all(b"one\n").expect("write");
        std::fs::rename(&path, dir.path().join("r.log.1")).expect("rotate");
        reopen().expect("reopen");
        w.write_all(b"two\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("r.log.1")).expect("read"),
            "one\n"
        );
    }
}
