//! The cluster view (`cluster_view:`): rampart answering CLUSTER SLOTS, SHARDS, NODES, INFO,
//! MYID and KEYSLOT as a Redis Cluster whose nodes are rampart instances, so a cluster-aware
//! client (redis-py's RedisCluster, ioredis' Cluster) spreads its connections over them
//! without bypassing them.
//!
//! ```text
//! cluster_view: [10.0.0.1:22121, 10.0.0.2:22121]
//!   node 0: 10.0.0.1:22121, a primary serving slots 0-8191
//!   node 1: 10.0.0.2:22121, a primary serving slots 8192-16383
//! ```
//!
//! Every instance serves every key (each is a whole proxy), so the split only spreads the
//! load; an instance never answers MOVED or ASK itself. A node's id is derived from its
//! address, so every instance with the same list describes the same cluster. `myself` is
//! the node whose port is the pool's `listen` port (else the first).

use bytes::BytesMut;
use rampart_config::{ClusterSeed, Listen, Pool};
use resp::encode;

/// Slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// The 40-hex-digit node id of `node`: FNV-1a of its address, stretched.
pub fn node_id(node: &ClusterSeed) -> String {
    let text = node.to_string();
    let mut out = String::with_capacity(40);
    for round in 0u8..3 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(round);
        for b in text.bytes().chain([round]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(40);
    out
}

/// The slots node `i` of `n` serves: `(first, last)`.
fn range(i: usize, n: usize) -> (usize, usize) {
    (i * SLOTS / n, (i + 1) * SLOTS / n - 1)
}

/// Which listed node is this instance.
fn myself(conf: &Pool) -> usize {
    let port = match &conf.listen {
        Listen::Tcp { port, .. } => Some(*port),
        _ => None,
    };
    conf.cluster_view
        .iter()
        .position(|n| Some(n.port) == port)
        .unwrap_or(0)
}

/// The reply to `CLUSTER <sub> ...` (`sub` lower case, as `cluster|slots`).
pub fn answer(conf: &Pool, sub: &str, argv: &[&[u8]]) -> BytesMut {
    let nodes = &conf.cluster_view;
    let n = nodes.len().max(1);
    let me = myself(conf);
    let mut out = BytesMut::new();
    match sub {
        "cluster|slots" => {
            encode::array_header(&mut out, nodes.len());
            for (i, node) in nodes.iter().enumerate() {
                let (a, b) = range(i, n);
                encode::array_header(&mut out, 3);
                encode::integer(&mut out, a as i64);
                encode::integer(&mut out, b as i64);
                encode::array_header(&mut out, 3);
                encode::bulk(&mut out, node.host.as_bytes());
                encode::integer(&mut out, i64::from(node.port));
                encode::bulk(&mut out, node_id(node).as_bytes());
            }
        }
        "cluster|shards" => {
            encode::array_header(&mut out, nodes.len());
            for (i, node) in nodes.iter().enumerate() {
                let (a, b) = range(i, n);
                encode::array_header(&mut out, 4);
                encode::bulk(&mut out, b"slots");
                encode::array_header(&mut out, 2);
                encode::integer(&mut out, a as i64);
                encode::integer(&mut out, b as i64);
                encode::bulk(&mut out, b"nodes");
                encode::array_header(&mut out, 1);
                encode::array_header(&mut out, 14);
                for (k, v) in [
                    ("id", node_id(node)),
                    ("port", node.port.to_string()),
                    ("ip", node.host.clone()),
                    ("endpoint", node.host.clone()),
                    ("role", "master".to_string()),
                    ("replication-offset", "0".to_string()),
                    ("health", "online".to_string()),
                ] {
                    encode::bulk(&mut out, k.as_bytes());
                    match k {
                        "port" | "replication-offset" => {
                            encode::integer(&mut out, v.parse().unwrap_or(0))
                        }
                        _ => encode::bulk(&mut out, v.as_bytes()),
                    }
                }
            }
        }
        "cluster|nodes" => {
            let mut text = String::new();
            for (i, node) in nodes.iter().enumerate() {
                let (a, b) = range(i, n);
                let flags = if i == me { "myself,master" } else { "master" };
                let bus = u32::from(node.port) + 10000;
                text.push_str(&format!(
                    "{} {}:{}@{bus} {flags} - 0 0 {} connected {a}-{b}\n",
                    node_id(node),
                    node.host,
                    node.port,
                    i + 1
                ));
            }
            encode::bulk(&mut out, text.as_bytes());
        }
        "cluster|info" => {
            let text = format!(
                "cluster_state:ok\r\ncluster_slots_assigned:{SLOTS}\r\ncluster_slots_ok:{SLOTS}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\ncluster_size:{}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\n",
                nodes.len(),
                nodes.len(),
                nodes.len(),
                me + 1
            );
            encode::bulk(&mut out, text.as_bytes());
        }
        "cluster|myid" => match nodes.get(me) {
            Some(node) => encode::bulk(&mut out, node_id(node).as_bytes()),
            None => encode::error(&mut out, "ERR rampart: the cluster view lists no node"),
        },
        "cluster|keyslot" => match argv.get(2) {
            Some(key) => encode::integer(&mut out, i64::from(hashkit::cluster_slot(key))),
            None => encode::error(
                &mut out,
                "ERR wrong number of arguments for 'cluster|keyslot' command",
            ),
        },
        other => encode::error(
            &mut out,
            &format!(
                "ERR rampart: the cluster view answers CLUSTER SLOTS, SHARDS, NODES, INFO, MYID and KEYSLOT, not {}",
                other.trim_start_matches("cluster|").to_ascii_uppercase()
            ),
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> ClusterSeed {
        ClusterSeed {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn slots_are_shared_in_order_and_ids_are_stable() {
        assert_eq!(range(0, 1), (0, 16383));
        assert_eq!(range(0, 2), (0, 8191));
        assert_eq!(range(1, 2), (8192, 16383));
        assert_eq!(range(2, 3), (10922, 16383));
        let id = node_id(&node(7000));
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, node_id(&node(7000)));
        assert_ne!(id, node_id(&node(7001)));
    }
}
