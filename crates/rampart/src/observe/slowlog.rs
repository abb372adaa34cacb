//! SLOWLOG through the proxy: requests slower than a threshold, measured from the read that
//! brought them to the moment their reply was ready, with the node that served them. A
//! bounded, process-wide list (only slow requests touch it); each entry names its pool, and
//! `SLOWLOG` shows, counts and resets the caller's pool's entries only (they hold the
//! arguments of its commands, which another pool's clients must not read).
//!
//! Entries are shaped as Redis writes them: at most [`MAX_ARGS`] arguments (the last one
//! saying `... (N more arguments)` when there were more), each cut at [`MAX_ARG_BYTES`] bytes
//! with `... (N more bytes)`, the client's address and name; rampart adds the node as a
//! seventh field, after the six Redis gives (clients that read entries by position, as
//! redis-py and Jedis do, ignore it).
//!
//! While a request is in flight its session keeps the arguments already cut to that shape
//! ([`keep`]), in one buffer per session, so that a slow one can be logged when its reply
//! leaves; with the slow log off ([`is_enabled`]) nothing is kept.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use resp::encode;

/// Most arguments an entry keeps, as Redis' `SLOWLOG_ENTRY_MAX_ARGC`.
pub const MAX_ARGS: usize = 32;
/// Most bytes an entry keeps of one argument, as Redis' `SLOWLOG_ENTRY_MAX_STRING`.
pub const MAX_ARG_BYTES: usize = 128;

static SLOWER_THAN_US: AtomicI64 = AtomicI64::new(10_000);
static MAX_LEN: AtomicUsize = AtomicUsize::new(128);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static LOG: Mutex<VecDeque<Entry>> = Mutex::new(VecDeque::new());

/// One slow request.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Increasing id.
    pub id: u64,
    /// The pool the request came to.
    pub pool: String,
    /// Unix time (s) when it completed.
    pub at: u64,
    /// How long it took, µs.
    pub us: u64,
    /// The arguments, command name first, cut as Redis cuts them.
    pub args: Vec<Vec<u8>>,
    /// The client's address (`ip:port`, or the unix socket path followed by `:0`).
    pub client_addr: String,
    /// CLIENT SETNAME of the session, if any.
    pub client_name: String,
    /// The node that served it ("" when answered by the proxy, "several" when split).
    pub node: String,
}

/// Set the threshold (µs; negative disables, 0 logs everything) and the list length.
pub fn configure(slower_than_us: i64, max_len: usize) {
    SLOWER_THAN_US.store(slower_than_us, Ordering::Relaxed);
    MAX_LEN.store(max_len, Ordering::Relaxed);
}

/// Whether a request that took `us` belongs in the log.
#[inline]
pub fn is_slow(us: u64) -> bool {
    let t = SLOWER_THAN_US.load(Ordering::Relaxed);
    t >= 0 && us >= t as u64
}

/// Whether requests are measured for the log at all (the threshold is not negative).
#[inline]
pub fn is_enabled() -> bool {
    SLOWER_THAN_US.load(Ordering::Relaxed) >= 0
}

/// Append the arguments of one request to `buf`, cut to the shape of an entry: the argument
/// count (4 bytes), then for each kept argument its length (4 bytes) and at most
/// [`MAX_ARG_BYTES`] of its bytes; a credential is kept as `(redacted)`, as Redis shows it
/// ([`crate::observe::monitor::redacted`]). Returns the bytes appended (at most about
/// 4.2 KiB).
pub fn keep(argv: &[&[u8]], buf: &mut std::collections::VecDeque<u8>) -> u32 {
    let before = buf.len();
    let argc = argv.len();
    let kept = if argc > MAX_ARGS { MAX_ARGS - 1 } else { argc };
    buf.extend((argc as u32).to_le_bytes());
    let hidden = crate::observe::monitor::redacted(argv);
    for (i, a) in argv[..kept].iter().enumerate() {
        let a: &[u8] = if hidden.hides(i) { b"(redacted)" } else { a };
        buf.extend((a.len() as u32).to_le_bytes());
        buf.extend(&a[..a.len().min(MAX_ARG_BYTES)]);
    }
    (buf.len() - before) as u32
}

/// Take `len` bytes written by [`keep`] from the front of `buf` and rebuild the arguments as
/// Redis shows them: `... (N more bytes)` after a cut argument, `... (N more arguments)` as
/// the last one when there were more than [`MAX_ARGS`].
pub fn take(buf: &mut std::collections::VecDeque<u8>, len: u32) -> Vec<Vec<u8>> {
    let bytes: Vec<u8> = buf.drain(..(len as usize).min(buf.len())).collect();
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize)
    };
    let argc = word(0);
    let kept = if argc > MAX_ARGS { MAX_ARGS - 1 } else { argc };
    let mut args = Vec::with_capacity(kept + 1);
    let mut at = 4;
    for _ in 0..kept {
        let full = word(at);
        let n = full.min(MAX_ARG_BYTES);
        let mut a = bytes.get(at + 4..at + 4 + n).unwrap_or_default().to_vec();
        if full > n {
            a.extend_from_slice(format!("... ({} more bytes)", full - n).as_bytes());
        }
        args.push(a);
        at += 4 + n;
    }
    if argc > kept {
        args.push(format!("... ({} more arguments)", argc - kept).into_bytes());
    }
    args
}

/// Drop `len` bytes written by [`keep`] from the front of `buf` (a request that was not slow).
#[inline]
pub fn skip(buf: &mut std::collections::VecDeque<u8>, len: u32) {
    buf.drain(..(len as usize).min(buf.len()));
}

/// Add an entry of pool `pool` (the oldest goes when the list is full).
pub fn record(
    pool: &str,
    us: u64,
    args: Vec<Vec<u8>>,
    (client_addr, client_name): (String, String),
    node: String,
) {
    let max = MAX_LEN.load(Ordering::Relaxed);
    let e = Entry {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        pool: pool.to_string(),
        at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        us,
        args,
        client_addr,
        client_name,
        node,
    };
    if let Ok(mut log) = LOG.lock() {
        log.push_front(e);
        log.truncate(max);
    }
}

/// Answer `SLOWLOG GET [n]`, `SLOWLOG LEN`, `SLOWLOG RESET` (and HELP) like Redis, about
/// the entries of pool `pool`; each GET entry carries a seventh field, the node that served
/// the request.
pub fn command(pool: &str, argv: &[&[u8]], out: &mut BytesMut) {
    let sub = argv
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let log: Vec<Entry> = LOG
        .lock()
        .map(|l| l.iter().filter(|e| e.pool == pool).cloned().collect())
        .unwrap_or_default();
    match (&sub[..], argv.len()) {
        (b"len", 2) => encode::integer(out, log.len() as i64),
        (b"reset", 2) => {
            if let Ok(mut l) = LOG.lock() {
                l.retain(|e| e.pool != pool);
            }
            encode::simple(out, b"OK");
        }
        (b"get", 2 | 3) => {
            let n = match argv.get(2) {
                None => 10,
                Some(a) => match std::str::from_utf8(a)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    Some(-1) => log.len(),
                    Some(n) if n >= 0 => n as usize,
                    _ => {
                        return encode::error(
                            out,
                            "ERR count should be greater than or equal to -1",
                        )
                    }
                },
            };
            let take: Vec<&Entry> = log.iter().take(n).collect();
            encode::array_header(out, take.len());
            for e in take {
                encode::array_header(out, 7);
                encode::integer(out, e.id as i64);
                encode::integer(out, e.at as i64);
                encode::integer(out, e.us as i64);
                encode::array_header(out, e.args.len());
                for a in &e.args {
                    encode::bulk(out, a);
                }
                encode::bulk(out, e.client_addr.as_bytes());
                encode::bulk(out, e.client_name.as_bytes());
                encode::bulk(out, e.node.as_bytes());
            }
        }
        (b"help", 2) => {
            let lines: [&[u8]; 4] = [
                b"SLOWLOG GET [<count>] -- slow requests through rampart, newest first; the 7th field is the node that served it",
                b"SLOWLOG LEN",
                b"SLOWLOG RESET",
                b"the threshold is rampart's --slowlog-slower-than (microseconds)",
            ];
            encode::array_header(out, lines.len());
            for l in lines {
                encode::bulk(out, l);
            }
        }
        _ => encode::error(
            out,
            &format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
                crate::text::sanitize(argv.get(1).copied().unwrap_or(b""), 64)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_bounded_and_newest_first() {
        configure(0, 3);
        for i in 0..5u64 {
            record(
                "p",
                i,
                vec![b"GET".to_vec(), format!("k{i}").into_bytes()],
                (String::new(), String::new()),
                "n".into(),
            );
        }
        let mut out = BytesMut::new();
        command("p", &[b"SLOWLOG", b"LEN"], &mut out);
        assert_eq!(&out[..], b":3\r\n");
        out.clear();
        command("other", &[b"SLOWLOG", b"LEN"], &mut out);
        assert_eq!(&out[..], b":0\r\n");
        out.clear();
        command("p", &[b"SLOWLOG", b"GET", b"1"], &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("k4") && !text.contains("k3"), "{text}");
        assert!(is_slow(0));
        configure(-1, 3);
        assert!(!is_slow(u64::MAX));
        configure(10_000, 128);
    }

    #[test]
    fn credentials_are_kept_redacted() {
        let mut buf = std::collections::VecDeque::new();
        let argv: Vec<&[u8]> = vec![b"AUTH", b"user", b"secret"];
        let n = keep(&argv, &mut buf);
        assert_eq!(
            take(&mut buf, n),
            [
                b"AUTH".to_vec(),
                b"(redacted)".to_vec(),
                b"(redacted)".to_vec()
            ]
        );
        let argv: Vec<&[u8]> = vec![b"config", b"set", b"masterauth", b"secret"];
        let n = keep(&argv, &mut buf);
        assert_eq!(take(&mut buf, n)[3], b"(redacted)");
    }

    #[test]
    fn arguments_are_cut_as_redis_cuts_them() {
        let mut buf = std::collections::VecDeque::new();
        let long = vec![b'x'; 300];
        let small: Vec<&[u8]> = vec![b"SET", b"k", &long];
        let many: Vec<Vec<u8>> = (0..40).map(|i| format!("a{i}").into_bytes()).collect();
        let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        let exactly: Vec<&[u8]> = many[..32].to_vec();
        let n1 = keep(&small, &mut buf);
        let n2 = keep(&many, &mut buf);
        let n3 = keep(&exactly, &mut buf);
        let first = take(&mut buf, n1);
        assert_eq!(first.len(), 3);
        let mut want = vec![b'x'; 128];
        want.extend_from_slice(b"... (172 more bytes)");
        assert_eq!(first[2], want);
        let second = take(&mut buf, n2);
        assert_eq!(second.len(), 32);
        assert_eq!(second[30], b"a30");
        assert_eq!(second[31], b"... (9 more arguments)");
        let third = take(&mut buf, n3);
        assert_eq!(third.len(), 32);
        assert_eq!(third[31], b"a31");
        assert!(buf.is_empty());
    }
}
