//! Following a Redis Cluster's redirections, so that a client of a cluster pool never sees
//! them. A connection gives back (through the retry queue, like a `READONLY` write) every
//! request a node answered with one of these, which all mean the node did not run it:
//!
//! ```text
//! MOVED <slot> <host>:<port>   the slot lives there now: send it there, refresh the map
//!                              (the table changes only when the follower adopts a new map)
//! ASK <slot> <host>:<port>     this key is being migrated there: ASKING + the request to
//!                              that node (connected on demand), the map unchanged
//! TRYAGAIN                     a multi-key request during a migration whose keys are
//!                              partly moved: MGET, MSET, DEL, UNLINK, EXISTS and TOUCH are
//!                              sent again key by key, each key following its own ASK, and
//!                              the replies merged into one (as for a split request); any
//!                              other command waits as for CLUSTERDOWN
//! CLUSTERDOWN                  a cluster without a majority: wait (jittered; as long as
//!                              waited so far, from 10 ms to 200 ms) and send it again by the
//!                              slot table
//! ```
//!
//! Each request follows at most [`MAX_REDIRECTS`] `MOVED`/`ASK` replies and retries for at
//! most the pool `timeout` from the first one; then the client gets an error that names the
//! last reply and says the command was not run. An empty host in `MOVED`/`ASK` is the
//! replying node's host.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rampart_config::ServerAddr;
use tokio::time::Instant;

use crate::reply::merge::Merger;
use crate::reply::pending::Pending;
use crate::topology::node::NodeRt;
use crate::upstream::error::Failure;
use crate::upstream::pool::WorkerPool;
use crate::upstream::route::{send, Access};
use crate::upstream::sink::{Resend, Retries, Retry, Sink};

/// Most `MOVED`/`ASK` replies one request follows.
pub const MAX_REDIRECTS: u32 = 5;
/// `ASKING`, sent in front of a request that an `ASK` points to another node.
pub const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// The first pause before a request answered `TRYAGAIN` or `CLUSTERDOWN` is sent again.
const RETRY_BASE: Duration = Duration::from_millis(10);
/// The longest such pause.
const RETRY_CAP: Duration = Duration::from_millis(200);

/// The pause before a request answered `TRYAGAIN` or `CLUSTERDOWN` is sent again, after
/// `spent` since its first such reply: about as long again as waited so far (jittered),
/// from 10 ms to 200 ms, never past `timeout`.
pub fn retry_pause(spent: Duration, timeout: Duration) -> Duration {
    let pause = spent.clamp(RETRY_BASE, RETRY_CAP);
    crate::rand::jitter(pause).min(timeout.saturating_sub(spent))
}

/// What a redirection says.
#[derive(Debug, PartialEq, Eq)]
pub enum Redirect {
    /// `MOVED`: the slot's owner now.
    Moved(ServerAddr),
    /// `ASK`: the node importing the slot.
    Ask(ServerAddr),
    /// `TRYAGAIN` or `CLUSTERDOWN`: later, by the slot table.
    Later,
}

/// Read a redirection's text (without `-` and CRLF); an empty host is `from_host`.
pub fn parse(reply: &str, from_host: &str) -> Option<Redirect> {
    let mut words = reply.split(' ');
    let kind = words.next()?;
    if kind == "TRYAGAIN" || kind == "CLUSTERDOWN" {
        return Some(Redirect::Later);
    }
    let _slot = words.next()?;
    let (host, port) = words.next()?.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = match host {
        "" => from_host.to_string(),
        h => h.trim_start_matches('[').trim_end_matches(']').to_string(),
    };
    let addr = ServerAddr::Tcp { host, port };
    match kind {
        "MOVED" => Some(Redirect::Moved(addr)),
        "ASK" => Some(Redirect::Ask(addr)),
        _ => None,
    }
}

/// The shard and node at `addr` in the pool's views, if any.
fn find(wp: &WorkerPool, addr: &ServerAddr) -> Option<(usize, Arc<NodeRt>)> {
    wp.rt.shards.iter().enumerate().find_map(|(i, s)| {
        s.view()
            .nodes
            .iter()
            .find(|n| &n.addr == addr)
            .map(|n| (i, Arc::clone(n)))
    })
}

/// The node at `addr` (named by a redirection) and its shard: found in the pool's views,
/// else made on demand outside them (an `ASK` target being imported into, a node added
/// since start), counted under `shard`, the shard of the request redirected.
pub fn node_at(wp: &WorkerPool, addr: &ServerAddr, shard: usize) -> (usize, Arc<NodeRt>) {
    find(wp, addr).unwrap_or_else(|| {
        let Some(cluster) = wp.rt.cluster.as_ref() else {
            // Not a cluster pool: nothing redirects there; the node is made for the caller.
            return (shard, Arc::new(other(wp, addr, shard)));
        };
        (shard, cluster.other_node(addr, || other(wp, addr, shard)))
    })
}

/// A node at `addr` outside the views, counted under `shard`.
fn other(wp: &WorkerPool, addr: &ServerAddr, shard: usize) -> NodeRt {
    let shard_name = wp
        .rt
        .shards
        .get(shard)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    NodeRt::new(
        addr.clone(),
        addr.to_string(),
        (None, rampart_config::defaults::NODE_PRIORITY),
        (wp.rt.conf.name.clone(), shard_name),
        workers(wp),
        false,
    )
}

/// Send a request a cluster node redirected (see the module doc), or fail it when it has
/// been redirected too often or for too long.
pub fn follow(wp: &Rc<WorkerPool>, r: Retry) {
    let Retry {
        mut sink, failure, ..
    } = r;
    let Failure::Redirect {
        node: from,
        reply,
        tries: _,
    } = failure
    else {
        return sink.fail(failure);
    };
    let (Some(cluster), Some(resend)) = (wp.rt.cluster.as_ref(), sink.resend.as_mut()) else {
        return sink.fail(Failure::Redirect {
            node: from,
            reply,
            tries: 1,
        });
    };
    let asked = std::mem::take(&mut resend.asking);
    let later = reply.starts_with("TRYAGAIN") || reply.starts_with("CLUSTERDOWN");
    if !later {
        resend.redirects += 1;
    } else if asked {
        // The importing node cannot take it yet (a transaction with keys on both sides
        // of the migration: EXEC answers TRYAGAIN there): the ASK that led there does not
        // count, so the request waits out the migration, within the pool timeout.
        resend.redirects = resend.redirects.saturating_sub(1);
    }
    let tries = resend.redirects;
    let first = *resend.redirected_at.get_or_insert_with(Instant::now);
    let (shard, write, client) = (resend.shard, resend.write, resend.client);
    let queue = Rc::clone(&resend.queue);
    let bytes = resend.bytes.clone();
    if asked {
        sink.skip = sink.skip.saturating_sub(1);
    }
    let timeout = wp.rt.timeout();
    let spent = first.elapsed();
    let from_host = from.rsplit_once(':').map_or("", |(h, _)| h).to_string();
    let give_up = |sink: Sink, from: String, reply: String| {
        sink.fail(Failure::Redirect {
            node: from,
            reply,
            tries,
        })
    };
    match parse(&reply, &from_host) {
        Some(Redirect::Moved(addr)) | Some(Redirect::Ask(addr))
            if tries <= MAX_REDIRECTS && spent < timeout =>
        {
            let ask = reply.starts_with("ASK ");
            if !ask {
                cluster.ask_refresh();
            }
            let (to_shard, node) = node_at(wp, &addr, shard);
            if ask {
                sink.skip += 1;
                if let Some(r) = sink.resend.as_mut() {
                    r.asking = true;
                }
            }
            let backend = wp.backend(to_shard, &node, client);
            let deadline = Instant::now() + timeout;
            if let Err((sink, e)) = backend.send_or_return(sink, deadline, |out| {
                if ask {
                    out.extend_from_slice(ASKING);
                }
                out.extend_from_slice(&bytes);
            }) {
                sink.fail(e);
            }
        }
        Some(Redirect::Later) if spent < timeout => {
            if reply.starts_with("TRYAGAIN") {
                if let Some((parts, merger)) = key_by_key(&bytes) {
                    let again = Again {
                        shard,
                        write,
                        client,
                        queue,
                        tries,
                        first,
                    };
                    return split(wp, sink, parts, merger, again);
                }
            }
            if reply.starts_with("CLUSTERDOWN") {
                cluster.ask_refresh();
            }
            // Doubling with the time already waited: 10 ms, then about as long again as
            // so far, at most 200 ms.
            let pause = retry_pause(spent, timeout);
            let wp = Rc::clone(wp);
            tokio::task::spawn_local(async move {
                tokio::time::sleep(pause).await;
                let access = if write { Access::Write } else { Access::Read };
                let deadline = Instant::now() + wp.rt.timeout();
                send(&wp, shard, client, sink, deadline, &bytes, access, None);
            });
        }
        _ => give_up(sink, from, reply),
    }
}

/// What the single-key requests of a split need to be sent (and sent again) as the request
/// they stand for was.
struct Again {
    shard: usize,
    write: bool,
    client: u64,
    queue: Rc<Retries>,
    tries: u32,
    first: Instant,
}

/// The single-key requests a multi-key request answered `TRYAGAIN` is sent again as, and how
/// their replies make its reply: `MGET k` each (an array of one: a key of another type is a
/// nil, as in MGET), `DEL`/`UNLINK`/`EXISTS`/`TOUCH k` summed, `MSET k v` all `+OK`. `None`
/// for another command, or one key (it waits out the migration instead).
fn key_by_key(bytes: &[u8]) -> Option<(Vec<Vec<u8>>, Merger)> {
    let mut dec = resp::RequestDecoder::new(resp::Limits {
        max_bulk: usize::MAX,
        ..resp::Limits::default()
    });
    let req = dec.decode(bytes).ok()??;
    let args: Vec<&[u8]> = req.args(bytes).collect();
    let (name, rest) = args.split_first()?;
    let step = match &name.to_ascii_lowercase()[..] {
        b"mget" | b"del" | b"unlink" | b"exists" | b"touch" => 1,
        b"mset" => 2,
        _ => return None,
    };
    let n = rest.len() / step;
    if n < 2 || rest.len() % step != 0 {
        return None;
    }
    let merger = match step {
        2 => Merger::AllOk,
        _ if name.eq_ignore_ascii_case(b"mget") => Merger::Array {
            total: n,
            positions: (0..n as u32).map(|i| vec![i]).collect(),
        },
        _ => Merger::Sum,
    };
    let parts = rest
        .chunks(step)
        .map(|kv| {
            let mut one = Vec::with_capacity(1 + step);
            one.push(*name);
            one.extend_from_slice(kv);
            let mut out = bytes::BytesMut::new();
            resp::encode::command(&mut out, &one);
            out.to_vec()
        })
        .collect();
    Some((parts, merger))
}

/// Send `parts` (from [`key_by_key`]) in place of `sink`'s request, each to the slot's node
/// with a [`Resend`] of its own so that each follows its own `ASK`; their replies gather in a
/// reply queue of this split and go to `sink` merged, once all are in. Bounded like the
/// request: every part ends by its own deadline, and the split waits one pool timeout more.
fn split(wp: &Rc<WorkerPool>, sink: Sink, parts: Vec<Vec<u8>>, merger: Merger, again: Again) {
    let pen = Rc::new(Pending::default());
    let seq = pen.push_gather(parts.len(), merger);
    let access = if again.write {
        Access::Write
    } else {
        Access::Read
    };
    let timeout = wp.rt.timeout();
    let deadline = Instant::now() + timeout;
    for (i, part) in parts.into_iter().enumerate() {
        let mut one = Sink::new(&pen, seq, i as u32);
        one.resend = Some(Box::new(Resend {
            bytes: part.clone(),
            shard: again.shard,
            write: again.write,
            client: again.client,
            retried: false,
            queue: Rc::clone(&again.queue),
            redirects: again.tries,
            redirected_at: Some(again.first),
            asking: false,
        }));
        send(
            wp,
            again.shard,
            again.client,
            one,
            deadline,
            &part,
            access,
            None,
        );
    }
    tokio::task::spawn_local(async move {
        let all_in = tokio::time::timeout_at(deadline + timeout, async {
            while pen.outstanding() > 0 {
                pen.wake.notified().await;
            }
        })
        .await;
        if all_in.is_err() {
            return sink.fail(Failure::Ended(
                "a request sent key by key during a slot migration did not complete",
            ));
        }
        let reply = pen.out.borrow_mut().split();
        sink.deliver(&reply);
    });
}

/// The number of workers a node made here keeps statistics for: as many as the pool's
/// other nodes (every worker may use it).
fn workers(wp: &WorkerPool) -> usize {
    let known = wp
        .rt
        .shards
        .iter()
        .find_map(|s| s.view().nodes.first().map(|n| n.workers()));
    known.unwrap_or(0).max(wp.worker + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> ServerAddr {
        ServerAddr::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn a_multi_key_request_splits_into_single_keys_with_its_merger() {
        let bytes = |args: &[&[u8]]| {
            let mut out = bytes::BytesMut::new();
            resp::encode::command(&mut out, args);
            out.to_vec()
        };
        let (parts, merger) = key_by_key(&bytes(&[b"MGET", b"{t}a", b"{t}b"])).unwrap();
        assert_eq!(
            parts,
            [bytes(&[b"MGET", b"{t}a"]), bytes(&[b"MGET", b"{t}b"])]
        );
        assert!(matches!(merger, Merger::Array { total: 2, .. }));
        let (parts, merger) = key_by_key(&bytes(&[b"mset", b"a", b"1", b"b", b"2"])).unwrap();
        assert_eq!(
            parts,
            [bytes(&[b"mset", b"a", b"1"]), bytes(&[b"mset", b"b", b"2"])]
        );
        assert!(matches!(merger, Merger::AllOk));
        let (_, merger) = key_by_key(&bytes(&[b"DEL", b"a", b"b", b"c"])).unwrap();
        assert!(matches!(merger, Merger::Sum));
        // One key, an odd MSET, a command that is not split: they wait instead.
        assert!(key_by_key(&bytes(&[b"MGET", b"a"])).is_none());
        assert!(key_by_key(&bytes(&[b"MSET", b"a", b"1", b"b"])).is_none());
        assert!(key_by_key(&bytes(&[b"SUNION", b"a", b"b"])).is_none());
        assert!(key_by_key(b"garbage").is_none());
    }

    #[test]
    fn redirections_name_their_node_and_an_empty_host_is_the_replying_one() {
        assert_eq!(
            parse("MOVED 3999 127.0.0.1:6381", "10.0.0.1"),
            Some(Redirect::Moved(tcp("127.0.0.1", 6381)))
        );
        assert_eq!(
            parse("ASK 3999 :6381", "10.0.0.1"),
            Some(Redirect::Ask(tcp("10.0.0.1", 6381)))
        );
        assert_eq!(
            parse("MOVED 1 [::1]:7000", ""),
            Some(Redirect::Moved(tcp("::1", 7000)))
        );
        assert_eq!(
            parse(
                "TRYAGAIN Multiple keys request during rehashing of slot",
                ""
            ),
            Some(Redirect::Later)
        );
        assert_eq!(
            parse("CLUSTERDOWN The cluster is down", ""),
            Some(Redirect::Later)
        );
        assert_eq!(parse("MOVED 1 host:0", ""), None);
        assert_eq!(parse("MOVED 1", ""), None);
    }
}
