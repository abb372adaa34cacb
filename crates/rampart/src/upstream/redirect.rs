//! Following a Redis Cluster's redirections, so that a client of a cluster pool never sees
//! them. A connection gives back (through the retry queue, like a `READONLY` write) every
//! request a node answered with one of these, which all mean the node did not run it:
//!
//! ```text
//! MOVED <slot> <host>:<port>   the slot lives there now: send it there, refresh the map
//!                              (the table changes only when the follower adopts a new map)
//! ASK <slot> <host>:<port>     this key is being migrated there: ASKING + the request to
//!                              that node (connected on demand), the map unchanged
//! TRYAGAIN, CLUSTERDOWN        a multi-key request during a migration, a cluster without a
//!                              majority: wait (jittered; as long as waited so far, from
//!                              10 ms to 200 ms) and send it again by the slot table
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

use crate::topology::node::NodeRt;
use crate::upstream::error::Failure;
use crate::upstream::pool::WorkerPool;
use crate::upstream::route::{send, Access};
use crate::upstream::sink::Retry;

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
    let bytes = resend.bytes.clone();
    if asked {
        sink.skip = sink.skip.saturating_sub(1);
    }
    let timeout = wp.rt.timeout();
    let spent = first.elapsed();
    let from_host = from.rsplit_once(':').map_or("", |(h, _)| h).to_string();
    let give_up = |sink: crate::upstream::sink::Sink, from: String, reply: String| {
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
