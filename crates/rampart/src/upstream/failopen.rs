//! A cache pool that fails open (`cache: true`, `fail_open: true`): when a shard cannot
//! answer, a read gets the miss Redis would give for a missing key and a write gets what the
//! pool says (`fail_open_writes`), instead of an error after the pool `timeout`.
//!
//! ```text
//! route::send ── circuit open? ── yes ──► answered at once (nothing sent)
//!                     │ no
//!               a node for it? ── no (its checks took them out) ──► answered at once too
//!                     │ yes
//!                     ▼
//!     request sent; its reply goes to a one-slot reply queue of its own (the pen)
//!                     │
//!     ┌───────────────┴───────────────────────────────┐
//!     reply within fail_open_timeout                  none by then, or a connection error
//!     → to the client's slot; failures in a row = 0   → the miss / drop / error to the slot;
//!                                                       one more failure in a row (the
//!                                                       circuit opens at fail_open_after);
//!                                                       a late reply lands in the pen and
//!                                                       is dropped there
//! ```
//!
//! The backend connection never notices: it matches the late reply to its request as always,
//! so it stays in order and the reply answers no one. The miss of each command, and which
//! writes may be dropped, come from the command table ([`rampart_commands::miss`]); a command
//! without one gets the error. Cost, in a pool with `fail_open` only: a one-slot queue and a
//! timer task per request sent.

use std::sync::Arc;

use rampart_commands::miss::{drop_reply, read_miss};
use rampart_config::{FailOpen, FailOpenWrites};

use crate::topology::PoolRt;
use crate::upstream::error::Failure;
use crate::upstream::sink::Sink;

/// What the client gets when the shard cannot answer.
enum Stand {
    /// A read's miss.
    Miss(Vec<u8>),
    /// A dropped write's reply.
    Drop(Vec<u8>),
    /// The error.
    Error,
}

/// The arguments of a RESP request we encoded or checked ourselves; empty when it is not a
/// multibulk.
fn argv(request: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = request;
    let line = |r: &[u8]| -> Option<(usize, usize)> {
        let end = memchr::memchr(b'\n', r)?;
        let text = std::str::from_utf8(r.get(1..end.checked_sub(1)?)?).ok()?;
        Some((text.parse().ok()?, end + 1))
    };
    if rest.first() != Some(&b'*') {
        return out;
    }
    let Some((n, used)) = line(rest) else {
        return out;
    };
    rest = &rest[used..];
    for _ in 0..n.min(1 << 20) {
        if rest.first() != Some(&b'$') {
            break;
        }
        let Some((len, used)) = line(rest) else {
            break;
        };
        let Some(arg) = rest.get(used..used + len) else {
            break;
        };
        out.push(arg);
        rest = rest.get(used + len + 2..).unwrap_or_default();
    }
    out
}

/// What `request` gets while its shard cannot answer; the reply in RESP3 when `resp3`.
fn stand(request: &[u8], write: bool, fo: &FailOpen, resp3: bool) -> Stand {
    let args = argv(request);
    let Some(name) = args.first() else {
        return Stand::Error;
    };
    if write {
        if fo.writes == FailOpenWrites::Error {
            return Stand::Error;
        }
        let conditional = args[1..].iter().any(|a| {
            a.eq_ignore_ascii_case(b"NX")
                || a.eq_ignore_ascii_case(b"XX")
                || a.eq_ignore_ascii_case(b"GET")
        });
        return drop_reply(name, conditional)
            .map_or(Stand::Error, |m| Stand::Drop(m.encode(args.len(), resp3)));
    }
    read_miss(name, args.len()).map_or(Stand::Error, |m| Stand::Miss(m.encode(args.len(), resp3)))
}

/// Give `sink` what it gets while `shard` cannot answer, counting the miss or drop.
fn answer(rt: &PoolRt, shard: usize, worker: usize, sink: Sink, stand: Stand, why: &'static str) {
    let circuit = &rt.shards[shard].circuit;
    match stand {
        Stand::Miss(reply) => {
            circuit.count_miss(worker);
            sink.deliver(&reply);
        }
        Stand::Drop(reply) => {
            circuit.count_drop(worker);
            sink.deliver(&reply);
        }
        Stand::Error => sink.fail(Failure::CacheShardDown {
            shard: rt.shards[shard].name.clone(),
            why,
        }),
    }
}

/// Why a shard whose circuit is open cannot answer (in [`Failure::CacheShardDown`]).
pub const CIRCUIT_OPEN: &str =
    "its circuit is open (fail_open_after failures in a row); a health check closes it";

/// The shard's circuit is open: answer `request` at once (nothing is sent), in RESP3 when
/// `resp3` (the client said `HELLO 3`).
pub fn answer_open(
    rt: &PoolRt,
    shard: usize,
    worker: usize,
    sink: Sink,
    request: &[u8],
    write: bool,
    resp3: bool,
) {
    let Some(fo) = rt.conf.fail_open else {
        return sink.fail(Failure::Ended("fail_open is off"));
    };
    let s = stand(request, write, &fo, resp3);
    answer(rt, shard, worker, sink, s, CIRCUIT_OPEN);
}

/// `shard` has no node for `request` now and it cannot wait for one: no node up for a read,
/// no primary for a write whose hold cannot help (or has expired, or is full). The shard
/// cannot answer, as when its circuit is open, whether its health checks or live traffic
/// found that out: a read gets its miss and a write what `fail_open_writes` says, counted;
/// any other request gets `failure` (nothing was sent), and so does a sink already guarded
/// ([`guard`]), whose task answers for the shard and counts the failure. A miss is in RESP3
/// when `resp3` (the client said `HELLO 3`).
#[allow(clippy::too_many_arguments)]
pub fn answer_unserved(
    rt: &PoolRt,
    shard: usize,
    worker: usize,
    sink: Sink,
    request: &[u8],
    write: bool,
    resp3: bool,
    failure: Failure,
) {
    let Some(fo) = rt.conf.fail_open.filter(|_| !sink.guarded()) else {
        return sink.fail(failure);
    };
    match stand(request, write, &fo, resp3) {
        Stand::Error => sink.fail(failure),
        s => answer(rt, shard, worker, sink, s, ""),
    }
}

/// A sink for `request` going to `shard` whose reply must come within the pool's
/// `fail_open_timeout`, else `sink` gets the miss (or drop, or error) and the reply, when
/// it comes, is dropped. The miss is in RESP3 when `resp3` (the client said `HELLO 3`).
pub fn guard(
    rt: &Arc<PoolRt>,
    shard: usize,
    worker: usize,
    sink: Sink,
    request: &[u8],
    write: bool,
    resp3: bool,
) -> Sink {
    let Some(fo) = rt.conf.fail_open else {
        return sink;
    };
    let (pen, inner) = sink.side();
    pen.set_guard();
    let stand = stand(request, write, &fo, resp3);
    let rt = Arc::clone(rt);
    tokio::task::spawn_local(async move {
        let arrived = tokio::time::timeout(fo.timeout, async {
            while pen.outstanding() > 0 {
                pen.wake.notified().await;
            }
        })
        .await;
        if pen.broken().is_some() {
            // An injected `reset` fault closed the pen: it is meant for the client, whose
            // connection closes. Passing on the pen's nothing would leave the request
            // without a reply and give it the next one's.
            return sink.pending.reset();
        }
        let circuit = &rt.shards[shard].circuit;
        let reply = pen.out.borrow_mut().split();
        // Only rampart words an error `ERR rampart: `: the connection failed, not the command.
        let failed = reply.starts_with(b"-ERR rampart: ");
        if arrived.is_ok() && !failed {
            circuit.success();
            return sink.deliver(&reply);
        }
        if circuit.failure(fo.after) {
            let name = &rt.shards[shard].name;
            tracing::warn!(pool = %rt.conf.name, shard = %name, "circuit open after {} failures in a row: the shard's requests are answered without it until a health check gets a reply", fo.after);
            crate::observe::events::record(
                crate::observe::events::Kind::CircuitOpen,
                &rt.conf.name,
                name,
                "",
                format!(
                    "circuit open after {} failures in a row: fail_open answers its requests",
                    fo.after
                ),
            );
        }
        // The pen stays referenced only by the backend's waiter: a late reply lands there.
        drop(pen);
        answer(
            &rt,
            shard,
            worker,
            sink,
            stand,
            if failed {
                "its connection failed"
            } else if write {
                // Sent: the server may run it still (a transaction whole), and a client told
                // only that the shard cannot answer would take it as not applied.
                "no reply within fail_open_timeout; the write was sent and may still be applied"
            } else {
                "no reply within fail_open_timeout"
            },
        );
    });
    inner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_read_from_the_request() {
        assert_eq!(
            argv(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nNX\r\n"),
            vec![&b"SET"[..], b"k", b"NX"]
        );
        assert!(argv(b"GET k\r\n").is_empty());
        assert_eq!(
            argv(b"*2\r\n$3\r\nGET\r\n$9\r\nk"),
            vec![&b"GET"[..]],
            "cut short"
        );
    }

    #[test]
    fn misses_drops_and_errors() {
        let fo = |writes| FailOpen {
            timeout: std::time::Duration::from_millis(100),
            after: 3,
            writes,
        };
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert!(
            matches!(stand(get, false, &fo(FailOpenWrites::Error), false), Stand::Miss(r) if r == b"$-1\r\n")
        );
        let mget = b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n";
        assert!(
            matches!(stand(mget, false, &fo(FailOpenWrites::Error), false), Stand::Miss(r) if r == b"*2\r\n$-1\r\n$-1\r\n")
        );
        let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        assert!(matches!(
            stand(set, true, &fo(FailOpenWrites::Error), false),
            Stand::Error
        ));
        assert!(
            matches!(stand(set, true, &fo(FailOpenWrites::Drop), false), Stand::Drop(r) if r == b"+OK\r\n")
        );
        let setnx = b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nnx\r\n";
        assert!(matches!(
            stand(setnx, true, &fo(FailOpenWrites::Drop), false),
            Stand::Error
        ));
        let incr = b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n";
        assert!(matches!(
            stand(incr, true, &fo(FailOpenWrites::Drop), false),
            Stand::Error
        ));
    }
}
