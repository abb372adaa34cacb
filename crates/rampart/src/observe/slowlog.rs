//! SLOWLOG through the proxy: requests slower than a threshold, measured from the read that
//! brought them to the moment their reply was ready, with the node that served them. A
//! bounded, process-wide list (only slow requests touch it). Each entry keeps the command and
//! its first argument (at most [`ARG_BYTES`] bytes), not every argument.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use resp::encode;

/// Bytes of the first argument kept per request.
pub const ARG_BYTES: usize = 32;

static SLOWER_THAN_US: AtomicI64 = AtomicI64::new(10_000);
static MAX_LEN: AtomicUsize = AtomicUsize::new(128);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static LOG: Mutex<VecDeque<Entry>> = Mutex::new(VecDeque::new());

/// One slow request.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Increasing id.
    pub id: u64,
    /// Unix time (s) when it completed.
    pub at: u64,
    /// How long it took, µs.
    pub us: u64,
    /// Command name and first argument.
    pub args: Vec<Vec<u8>>,
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

/// Add an entry (the oldest goes when the list is full).
pub fn record(us: u64, args: Vec<Vec<u8>>, client_name: String, node: String) {
    let max = MAX_LEN.load(Ordering::Relaxed);
    let e = Entry {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        us,
        args,
        client_name,
        node,
    };
    if let Ok(mut log) = LOG.lock() {
        log.push_front(e);
        log.truncate(max);
    }
}

/// Answer `SLOWLOG GET [n]`, `SLOWLOG LEN`, `SLOWLOG RESET` (and HELP) like Redis; each GET
/// entry carries a seventh field, the node that served the request.
pub fn command(argv: &[&[u8]], out: &mut BytesMut) {
    let sub = argv
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let log = LOG.lock().map(|l| l.clone()).unwrap_or_default();
    match (&sub[..], argv.len()) {
        (b"len", 2) => encode::integer(out, log.len() as i64),
        (b"reset", 2) => {
            if let Ok(mut l) = LOG.lock() {
                l.clear();
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
                encode::bulk(out, b"");
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
                i,
                vec![b"GET".to_vec(), format!("k{i}").into_bytes()],
                String::new(),
                "n".into(),
            );
        }
        let mut out = BytesMut::new();
        command(&[b"SLOWLOG", b"LEN"], &mut out);
        assert_eq!(&out[..], b":3\r\n");
        out.clear();
        command(&[b"SLOWLOG", b"GET", b"1"], &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("k4") && !text.contains("k3"), "{text}");
        assert!(is_slow(0));
        configure(-1, 3);
        assert!(!is_slow(u64::MAX));
        configure(10_000, 128);
    }
}
