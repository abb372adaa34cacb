//! `MONITOR`: every command passing through the monitor's own pool, as one line per command
//! to each client that asked, in Redis' format with the pool where Redis writes the database:
//! `+<unix seconds>.<micros> [<pool> <client address>] "cmd" "arg" ...`. A pool's users and
//! rules bind only its own clients, so a monitor never sees another pool's commands (as
//! CLIENT LIST, KILL and PAUSE act on the caller's pool).
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
    /// The pool whose commands the monitor sees.
    pool: Arc<str>,
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

/// Start a monitor of pool `pool`; it receives every command [`feed`] sees there from now
/// on.
pub fn subscribe(pool: &str) -> Monitor {
    let (tx, rx) = mpsc::channel(MAX_LINES);
    let bytes = Arc::new(AtomicUsize::new(0));
    if let Ok(mut s) = sinks().lock() {
        s.push(Sink {
            pool: Arc::from(pool),
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

/// Offer one command (`argv`, received from `client` on pool `pool`) to every monitor of
/// that pool. Credentials show as `(redacted)`, as Redis shows them ([`redacted`]).
pub fn feed(pool: &str, client: &str, argv: &[&[u8]]) {
    // Monitors of other pools cost their pools' commands a look, not a line.
    match sinks().lock() {
        Ok(s) if s.iter().any(|sink| &*sink.pool == pool) => {}
        _ => return,
    }
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
        if &*sink.pool != pool {
            return true;
        }
        // Counted before it is sent: the monitor's session, on another thread, may take the
        // line and subtract it at once, and a count taken below zero wraps (the sum below
        // would then overflow, a panic in a debug build, with this lock held).
        let held = sink.bytes.fetch_add(line.len(), Ordering::Relaxed);
        if held.saturating_add(line.len()) > MAX_BYTES {
            return false;
        }
        sink.tx.try_send(line.clone()).is_ok()
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
        if redact.hides(i) {
            out.extend_from_slice(b"(redacted)");
        } else {
            quote(a, &mut out);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The argument positions of one command that hold a credential, hidden as `(redacted)` in
/// MONITOR and SLOWLOG as Redis 7.0 hides them: every argument of `AUTH`; the user and
/// password after `HELLO`'s `AUTH`; the password after `MIGRATE`'s `AUTH` and the user and
/// password after its `AUTH2`; every argument of `ACL SETUSER` after the subcommand; the
/// value of `requirepass`, `masterauth` and `masteruser` in `CONFIG SET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redacted {
    /// Positions below 64 that are hidden.
    mask: u64,
    /// Every position from this one on is hidden (`usize::MAX`: none).
    from: usize,
}

impl Redacted {
    /// Whether argument `i` (0 is the command name) is hidden.
    #[inline]
    pub fn hides(&self, i: usize) -> bool {
        i >= self.from || (i < 64 && self.mask >> i & 1 == 1)
    }

    fn hide(&mut self, i: usize) {
        if i < 64 {
            self.mask |= 1 << i;
        } else {
            // Past the mask, hide the rest: more than needed, never less.
            self.from = self.from.min(i);
        }
    }
}

/// Which arguments of `argv` hold a credential (see [`Redacted`]); for any other command,
/// none. Costs a few comparisons of the command name.
pub fn redacted(argv: &[&[u8]]) -> Redacted {
    let mut r = Redacted {
        mask: 0,
        from: usize::MAX,
    };
    let Some(name) = argv.first() else {
        return r;
    };
    let is = |i: usize, word: &[u8]| argv.get(i).is_some_and(|a| a.eq_ignore_ascii_case(word));
    if name.eq_ignore_ascii_case(b"auth") {
        r.from = 1;
    } else if name.eq_ignore_ascii_case(b"hello") {
        if let Some(p) = (2..argv.len()).find(|&i| is(i, b"auth")) {
            r.hide(p + 1);
            r.hide(p + 2);
        }
    } else if name.eq_ignore_ascii_case(b"migrate") {
        let mut j = 6;
        while j < argv.len() {
            if is(j, b"auth") {
                r.hide(j + 1);
                j += 2;
            } else if is(j, b"auth2") {
                r.hide(j + 1);
                r.hide(j + 2);
                j += 3;
            } else {
                j += 1;
            }
        }
    } else if name.eq_ignore_ascii_case(b"acl") && is(1, b"setuser") {
        r.from = 2;
    } else if name.eq_ignore_ascii_case(b"config") && is(1, b"set") {
        let mut j = 2;
        while j + 1 < argv.len() {
            if [b"requirepass".as_slice(), b"masterauth", b"masteruser"]
                .iter()
                .any(|w| is(j, w))
            {
                r.hide(j + 1);
            }
            j += 2;
        }
    }
    r
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

    /// The positions `redacted` hides in `words` (split on spaces).
    fn hidden(words: &str) -> Vec<usize> {
        let argv: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        let r = redacted(&argv);
        (0..argv.len()).filter(|&i| r.hides(i)).collect()
    }

    #[test]
    fn every_credential_redis_hides_is_found() {
        assert_eq!(hidden("auth pw"), [1]);
        assert_eq!(hidden("HELLO 3 auth u pw SETNAME n"), [3, 4]);
        assert_eq!(hidden("HELLO 3 SETNAME auth"), Vec::<usize>::new());
        assert_eq!(hidden("MIGRATE h 1 k 0 10 COPY AUTH pw"), [8]);
        assert_eq!(hidden("migrate h 1 \"\" 0 10 auth2 u pw KEYS auth"), [7, 8]);
        assert_eq!(hidden("ACL SETUSER u on >pw ~*"), [2, 3, 4, 5]);
        assert_eq!(hidden("ACL LIST"), Vec::<usize>::new());
        assert_eq!(
            hidden("CONFIG SET maxmemory 1 requirepass pw MasterAuth pw2 masteruser u"),
            [5, 7, 9]
        );
        assert_eq!(hidden("CONFIG GET requirepass"), Vec::<usize>::new());
        assert_eq!(hidden("SET auth pw"), Vec::<usize>::new());
        let mut many = vec!["MIGRATE", "h", "1", "", "0", "10"];
        many.extend(std::iter::repeat_n("x", 70));
        many.extend(["AUTH", "pw", "KEYS", "k"]);
        let argv: Vec<&[u8]> = many.iter().map(|w| w.as_bytes()).collect();
        let r = redacted(&argv);
        assert!(r.hides(77) && !r.hides(75), "past 64 arguments too");
    }
}
