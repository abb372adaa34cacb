//! The log file of `-o/--output`, reopened on SIGUSR1 so logrotate can move it away.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

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
