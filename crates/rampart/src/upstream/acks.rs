//! Writes acknowledged by replicas (the pool's `min_replica_acks`).
//!
//! A primary connection puts `WAIT <n> <timeout ms>` after each batch of writes it writes,
//! and holds the replies of those writes until `WAIT` answers: at least `n` replicas
//! release them as they were; fewer (or an error, or a connection that ends first) answer
//! each with an error saying the write was applied on the primary but may not be durable.
//! Such a write is never resent. One `WAIT` per batch, so 16 pipelined writes cost one more
//! round trip and one replication wait, not 16. Replies of reads are never held: they go to
//! their slot as they arrive, and a client's replies still leave in order, so a read that
//! follows a client's own write waits only for that write. A write whose reply is so large
//! that it streams to its client as it arrives (over 256 KiB, as an `EVAL` may return) cannot
//! be held: it is released as it streams, unconfirmed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::BytesMut;

use crate::upstream::error::Failure;

static WAITS: AtomicU64 = AtomicU64::new(0);
static CONFIRMED: AtomicU64 = AtomicU64::new(0);
static NOT_DURABLE: AtomicU64 = AtomicU64::new(0);

/// Process-wide counts: `WAIT`s sent, writes released after enough replicas acknowledged
/// them, and writes answered with an error because too few did (or `WAIT` failed).
pub fn stats() -> (u64, u64, u64) {
    (
        WAITS.load(Relaxed),
        CONFIRMED.load(Relaxed),
        NOT_DURABLE.load(Relaxed),
    )
}

/// Append `WAIT <wanted> <within in ms, at least 1>` to `out`.
pub fn push_wait(out: &mut BytesMut, wanted: u32, within: Duration) {
    let n = wanted.to_string();
    let ms = within.as_millis().max(1).to_string();
    resp::encode::array_header(out, 3);
    for arg in [&b"WAIT"[..], n.as_bytes(), ms.as_bytes()] {
        resp::encode::bulk(out, arg);
    }
    WAITS.fetch_add(1, Relaxed);
}

/// Judge `WAIT`'s reply for `count` held writes: `None` releases them; otherwise the
/// failure each of them gets. `node` names the primary in an error.
pub fn judge(
    reply: &[u8],
    wanted: u32,
    within: Duration,
    node: &str,
    count: usize,
) -> Option<Failure> {
    let acked = std::str::from_utf8(reply)
        .ok()
        .and_then(|t| t.strip_prefix(':'))
        .and_then(|t| t.trim_end().parse::<i64>().ok());
    let failure = match acked {
        Some(a) if a >= i64::from(wanted) => None,
        Some(acked) => Some(Failure::NotDurable {
            acked,
            wanted,
            within,
        }),
        None => Some(Failure::AcksUnknown {
            node: node.to_string(),
            reason: String::from_utf8_lossy(reply.get(1..).unwrap_or_default())
                .trim_end()
                .to_string(),
        }),
    };
    let counter = if failure.is_none() {
        &CONFIRMED
    } else {
        &NOT_DURABLE
    };
    counter.fetch_add(count as u64, Relaxed);
    failure
}

/// `count` held writes lost their `WAIT` with the connection (`why`): each gets this.
pub fn lost(node: &str, why: &str, count: usize) -> Failure {
    NOT_DURABLE.fetch_add(count as u64, Relaxed);
    Failure::AcksUnknown {
        node: node.to_string(),
        reason: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_one_command_with_milliseconds() {
        let mut out = BytesMut::new();
        push_wait(&mut out, 2, Duration::from_millis(1500));
        assert_eq!(&out[..], b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$4\r\n1500\r\n");
        out.clear();
        push_wait(&mut out, 1, Duration::from_micros(10));
        assert_eq!(
            &out[..],
            b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n1\r\n",
            "at least 1 ms"
        );
    }

    #[test]
    fn enough_replicas_release_fewer_fail() {
        let s = Duration::from_secs(1);
        assert!(judge(b":2\r\n", 2, s, "n", 1).is_none());
        assert!(judge(b":3\r\n", 2, s, "n", 1).is_none());
        let short = judge(b":1\r\n", 2, s, "n", 1).map(|f| f.to_string());
        assert_eq!(
            short.as_deref(),
            Some(
                "write applied on the primary but acknowledged by only 1 of 2 replicas within \
                 1s; it may not be durable"
            )
        );
        let refused = judge(
            b"-ERR WAIT cannot be used with replica instances.\r\n",
            1,
            s,
            "n",
            1,
        )
        .map(|f| f.to_string());
        assert_eq!(
            refused.as_deref(),
            Some(
                "write applied on the primary but server n could not count the replicas that \
                 have it (ERR WAIT cannot be used with replica instances.); it may not be \
                 durable"
            )
        );
    }
}
