//! `MONITOR`: every command passing through rampart, as one line per command to each client
//! that asked, in Redis' format with the pool where Redis writes the database:
//! `+<unix seconds>.<micros> [<pool> <client address>] "cmd" "arg" ...`.
//!
//! The data path pays one relaxed atomic load per command while no monitor exists
//! ([`active`]). With monitors, each command is formatted once and offered to every monitor's
//! queue without waiting: a queue holds at most [`MAX_LINES`] lines and [`MAX_BYTES`] bytes,
//! and a monitor whose queue is full is dropped (its session sees its queue end and closes
//! the client), so a slow monitor never slows the commands it watches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Most lines waiting for one monitor before it is dropped.
pub const MAX_LINES: usize = 4096;
/// Most bytes of lines waiting for one monitor before it is dropped (8 MiB).
pub const MAX_BYTES: usize = 8 << 20;

/// Monitors registered now; 0 keeps the data path free of any other work.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

struct Sink {
    tx: mpsc::Sender<Bytes>,
    bytes: Arc<AtomicUsize>,
}

fn sinks() -> &'static Mutex<Vec<Sink>> {
    static S: OnceLock<Mutex<Vec<Sink>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(Vec::new()))
}

/// The receiving end of one monitor: lines, each a complete RESP simple string.
#[derive(Debug)]
pub struct Monitor {
    rx: mpsc::Receiver<Bytes>,
    bytes: Arc<AtomicUsize>,
}

impl Monitor {
    /// The next line; `None` once the monitor was dropped for falling behind.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let line = self.rx.recv().await?;
        self.bytes.fetch_sub(line.len(), Ordering::Relaxed);
        Some(line)
    }
}

/// Start a monitor; it receives every command [`feed`] sees from now on.
pub fn subscribe() -> Monitor {
    let (tx, rx) = mpsc::channel(MAX_LINES);
    let bytes = Arc::new(AtomicUsize::new(0));
    if let Ok(mut s) = sinks().lock() {
        s.push(Sink {
            tx,
            bytes: Arc::clone(&bytes),
        });
        ACTIVE.store(s.len(), Ordering::Release);
    }
    Monitor { rx, bytes }
}

/// Whether any monitor exists (one relaxed load: the data path's only cost without one).
#[inline]
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

/// Offer one command (`argv`, received from `client` on pool `pool`) to every monitor.
/// `AUTH`'s arguments and `HELLO`'s credentials show as `(redacted)`, as Redis shows them.
pub fn feed(pool: &str, client: &str, argv: &[&[u8]]) {
    let line = Bytes::from(format_line(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
        pool,
        client,
        argv,
    ));
    let Ok(mut s) = sinks().lock() else { return };
    s.retain(|sink| {
        if sink.bytes.load(Ordering::Relaxed) + line.len() > MAX_BYTES {
            return false;
        }
        match sink.tx.try_send(line.clone()) {
            Ok(()) => {
                sink.bytes.fetch_add(line.len(), Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    });
    ACTIVE.store(s.len(), Ordering::Release);
}

/// Forget monitors whose session ended (their queues are closed).
pub fn prune() {
    if let Ok(mut s) = sinks().lock() {
        s.retain(|sink| !sink.tx.is_closed());
        ACTIVE.store(s.len(), Ordering::Release);
    }
}

/// One monitor line: `+<secs>.<micros> [<pool> <client>] "arg" ...\r\n`, each argument quoted
/// and escaped as Redis does (`\"`, `\\`, `\n`, `\r`, `\t`, `\a`, `\b`, other bytes outside
/// printable ASCII as `\xhh`).
pub fn format_line(at: std::time::Duration, pool: &str, client: &str, argv: &[&[u8]]) -> Vec<u8> {
    let mut out = format!(
        "+{}.{:06} [{} {}]",
        at.as_secs(),
        at.subsec_micros(),
        pool,
        client
    )
    .into_bytes();
    let redact = redacted(argv);
    for (i, a) in argv.iter().enumerate() {
        out.extend_from_slice(b" \"");
        if redact(i) {
            out.extend_from_slice(b"(redacted)");
        } else {
            quote(a, &mut out);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Which argument positions of `argv` Redis hides from monitors.
pub(crate) fn redacted(argv: &[&[u8]]) -> impl Fn(usize) -> bool {
    let name = argv
        .first()
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    let hello_auth = if name == b"hello" {
        argv.iter()
            .position(|a| a.eq_ignore_ascii_case(b"auth"))
            .filter(|&p| p >= 2)
    } else {
        None
    };
    let auth = name == b"auth";
    move |i| (auth && i > 0) || hello_auth.is_some_and(|p| i == p + 1 || i == p + 2)
}

fn quote(a: &[u8], out: &mut Vec<u8>) {
    for &c in a {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            c if c.is_ascii_graphic() || c == b' ' => out.push(c),
            c => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quote_like_redis() {
        let at = std::time::Duration::new(1_700_000_000, 42_000);
        let argv: Vec<&[u8]> = vec![b"SET", b"k\"\\", b"a\r\n\x01 b"];
        assert_eq!(
            format_line(at, "alpha", "127.0.0.1:5000", &argv),
            b"+1700000000.000042 [alpha 127.0.0.1:5000] \"SET\" \"k\\\"\\\\\" \"a\\r\\n\\x01 b\"\r\n"
        );
    }

    #[test]
    fn credentials_are_redacted() {
        let at = std::time::Duration::new(1, 0);
        let auth: Vec<&[u8]> = vec![b"AUTH", b"user", b"secret"];
        assert_eq!(
            format_line(at, "p", "c", &auth),
            b"+1.000000 [p c] \"AUTH\" \"(redacted)\" \"(redacted)\"\r\n"
        );
        let hello: Vec<&[u8]> = vec![b"HELLO", b"3", b"AUTH", b"u", b"pw", b"SETNAME", b"n"];
        assert_eq!(
            format_line(at, "p", "c", &hello),
            b"+1.000000 [p c] \"HELLO\" \"3\" \"AUTH\" \"(redacted)\" \"(redacted)\" \"SETNAME\" \"n\"\r\n"
        );
    }
}
