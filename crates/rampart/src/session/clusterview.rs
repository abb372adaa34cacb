//! The two faces rampart shows cluster-aware clients: CLUSTER, READONLY, READWRITE and
//! ASKING.
//!
//! Without `cluster_view` a pool answers as a Redis 7.0 server with cluster support disabled:
//! every CLUSTER subcommand, READONLY, READWRITE and ASKING get `ERR This instance has cluster
//! support disabled` (unknown subcommands and wrong argument counts are refused before, by
//! dispatch, in Redis' own words).
//!
//! With `cluster_view` the pool answers as one node of a Redis Cluster whose nodes are the
//! rampart instances it lists ([`rampart_config::ClusterView`]): CLUSTER SLOTS, SHARDS, NODES,
//! INFO, MYID, KEYSLOT, REPLICAS, LINKS, COUNT-FAILURE-REPORTS and HELP in Redis 7.0's shapes
//! (RESP2 and RESP3); READONLY, READWRITE and ASKING are `+OK`, since every instance serves
//! every key and routes reads by the pool's read policy whatever the client asked. Nothing
//! else changes: no MOVED, ASK or CROSSSLOT ever comes from a view, so a command whose keys
//! span slots is served whole as without it. Commands that change a cluster (ADDSLOTS,
//! MEET, FAILOVER, ...) are refused, and so are COUNTKEYSINSLOT and GETKEYSINSLOT, which the
//! servers behind the pool (standalone, with no index of keys by slot) cannot answer.

use std::fmt::Write as _;

use bytes::BytesMut;
use rampart_config::{ClusterView, ViewNode};
use resp::encode;

use crate::session::local::Local;
use crate::text::sanitize;

/// Redis' reply when cluster support is disabled.
pub const DISABLED: &str = "ERR This instance has cluster support disabled";

/// Answers `cmd` (`cluster|<sub>`, `readonly`, `readwrite` or `asking`), whose argument count
/// dispatch has checked.
pub fn answer(ctx: &Local<'_>, cmd: &str, argv: &[&[u8]]) -> BytesMut {
    let mut out = BytesMut::new();
    let Some(view) = &ctx.pool.conf.cluster_view else {
        encode::error(&mut out, DISABLED);
        return out;
    };
    let resp3 = ctx.client.resp3;
    let pool = &ctx.pool.conf.name;
    // Dispatch checked the argument count; a missing one reads as empty all the same.
    let arg = |i: usize| argv.get(i).copied().unwrap_or_default();
    match cmd {
        "readonly" | "readwrite" | "asking" => encode::simple(&mut out, b"OK"),
        "cluster|help" => help(&mut out),
        "cluster|info" => encode::text_for(&mut out, resp3, info(view).as_bytes()),
        "cluster|myid" => encode::bulk(&mut out, view.nodes[view.me].id.as_bytes()),
        "cluster|nodes" => encode::text_for(&mut out, resp3, nodes(view).as_bytes()),
        "cluster|slots" => slots(view, resp3, &mut out),
        "cluster|shards" => shards(view, resp3, &mut out),
        "cluster|links" => encode::array_header(&mut out, 0),
        "cluster|keyslot" => {
            encode::integer(&mut out, i64::from(hashkit::cluster_slot(arg(2))));
        }
        "cluster|countkeysinslot" => match integer(arg(2)) {
            None => encode::error(&mut out, NOT_INTEGER),
            Some(s) if !(0..16384).contains(&s) => encode::error(&mut out, "ERR Invalid slot"),
            Some(_) => encode::error(&mut out, &no_slot_index("COUNTKEYSINSLOT", pool)),
        },
        "cluster|getkeysinslot" => match (integer(arg(2)), integer(arg(3))) {
            (None, _) | (_, None) => encode::error(&mut out, NOT_INTEGER),
            (Some(s), Some(n)) if !(0..16384).contains(&s) || n < 0 => {
                encode::error(&mut out, "ERR Invalid slot or number of keys")
            }
            _ => encode::error(&mut out, &no_slot_index("GETKEYSINSLOT", pool)),
        },
        "cluster|replicas" | "cluster|slaves" => match find(view, arg(2)) {
            None => unknown_node(&mut out, arg(2)),
            Some(i) if view.master_of(i).is_some() => {
                encode::error(&mut out, "ERR The specified node is not a master")
            }
            Some(i) => {
                let replicas: Vec<usize> = (0..view.nodes.len())
                    .filter(|&r| view.master_of(r) == Some(i))
                    .collect();
                encode::array_header(&mut out, replicas.len());
                for r in replicas {
                    let mut line = String::new();
                    node_line(view, r, &mut line);
                    encode::bulk(&mut out, line.as_bytes());
                }
            }
        },
        "cluster|count-failure-reports" => match find(view, arg(2)) {
            None => unknown_node(&mut out, arg(2)),
            Some(_) => encode::integer(&mut out, 0),
        },
        other => {
            let sub = other.strip_prefix("cluster|").unwrap_or(other);
            encode::error(
                &mut out,
                &format!(
                    "ERR rampart: CLUSTER {} is not available: the cluster that pool '{pool}' presents is set by its configuration (cluster_view), not by CLUSTER commands",
                    sub.to_ascii_uppercase()
                ),
            )
        }
    }
    out
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

fn no_slot_index(sub: &str, pool: &str) -> String {
    format!(
        "ERR rampart: CLUSTER {sub} is not available: the servers behind pool '{pool}' are not a Redis Cluster and keep no index of keys by slot (every instance of its cluster_view serves every key)"
    )
}

fn unknown_node(out: &mut BytesMut, id: &[u8]) {
    encode::error(out, &format!("ERR Unknown node {}", sanitize(id, 128)));
}

/// A signed decimal, as Redis' `getLongLongFromObject` reads it.
fn integer(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// The node whose id is `id`.
fn find(view: &ClusterView, id: &[u8]) -> Option<usize> {
    view.nodes.iter().position(|n| n.id.as_bytes() == id)
}

/// The node's IP address, or `None` when it is listed by host name.
fn ip(node: &ViewNode) -> Option<&str> {
    node.host
        .parse::<std::net::IpAddr>()
        .is_ok()
        .then_some(node.host.as_str())
}

/// The config epoch of node `i`: its position in the list plus one for a master (as
/// `redis-cli --cluster create` numbers them), its master's for a replica.
fn epoch(view: &ClusterView, i: usize) -> usize {
    view.master_of(i).unwrap_or(i) + 1
}

/// Masters that own slots.
fn masters(view: &ClusterView) -> usize {
    (0..view.nodes.len())
        .filter(|&i| view.range(i).is_some())
        .count()
}

/// CLUSTER INFO, as Redis 7.0 words it: the view's slots are always all assigned and served.
fn info(view: &ClusterView) -> String {
    let masters = masters(view);
    format!(
        "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\ncluster_size:{masters}\r\ncluster_current_epoch:{masters}\r\ncluster_my_epoch:{}\r\ncluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
        view.nodes.len(),
        epoch(view, view.me),
    )
}

/// One CLUSTER NODES line (without its newline): `<id> <ip:port@cport[,hostname]> <flags>
/// <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot range>`. There is no
/// cluster bus, so the bus port is 0; a node listed by host name shows it after the comma
/// with an empty IP, as Redis shows a node whose IP it does not know.
fn node_line(view: &ClusterView, i: usize, t: &mut String) {
    let n = &view.nodes[i];
    let addr = match ip(n) {
        Some(ip) => format!("{ip}:{}@0", n.port),
        None => format!(":{}@0,{}", n.port, n.host),
    };
    let role = if view.master_of(i).is_some() {
        "slave"
    } else {
        "master"
    };
    let flags = if i == view.me {
        format!("myself,{role}")
    } else {
        role.to_string()
    };
    let master = view.master_of(i).map_or("-", |m| view.nodes[m].id.as_str());
    let _ = write!(
        t,
        "{} {addr} {flags} {master} 0 0 {} connected",
        n.id,
        epoch(view, i)
    );
    if let Some((a, b)) = view.range(i) {
        let _ = if a == b {
            write!(t, " {a}")
        } else {
            write!(t, " {a}-{b}")
        };
    }
}

/// CLUSTER NODES: one line per instance, in list order, each ending in `\n`.
fn nodes(view: &ClusterView) -> String {
    let mut t = String::new();
    for i in 0..view.nodes.len() {
        node_line(view, i, &mut t);
        t.push('\n');
    }
    t
}

/// A node in CLUSTER SLOTS: endpoint (the host as listed), port, id, and an empty map of
/// further endpoints (rampart resolves no names for the view).
fn slot_node(node: &ViewNode, resp3: bool, out: &mut BytesMut) {
    encode::array_header(out, 4);
    encode::bulk(out, node.host.as_bytes());
    encode::integer(out, i64::from(node.port));
    encode::bulk(out, node.id.as_bytes());
    map_header(out, resp3, 0);
}

fn map_header(out: &mut BytesMut, resp3: bool, pairs: usize) {
    if resp3 {
        encode::map_header(out, pairs);
    } else {
        encode::array_header(out, pairs * 2);
    }
}

/// CLUSTER SLOTS: one entry per master's range, in slot order: start, end, the master, then
/// its replicas.
fn slots(view: &ClusterView, resp3: bool, out: &mut BytesMut) {
    let masters: Vec<(usize, (u16, u16))> = (0..view.nodes.len())
        .filter_map(|i| view.range(i).map(|r| (i, r)))
        .collect();
    encode::array_header(out, masters.len());
    for (m, (a, b)) in masters {
        let replicas: Vec<usize> = (0..view.nodes.len())
            .filter(|&r| view.master_of(r) == Some(m))
            .collect();
        encode::array_header(out, 3 + replicas.len());
        encode::integer(out, i64::from(a));
        encode::integer(out, i64::from(b));
        slot_node(&view.nodes[m], resp3, out);
        for r in replicas {
            slot_node(&view.nodes[r], resp3, out);
        }
    }
}

/// CLUSTER SHARDS: per master, `slots` (start and end pairs) and `nodes` (the master, then
/// its replicas, each a map: id, port, ip, endpoint, hostname when listed by name, role,
/// replication-offset, health).
fn shards(view: &ClusterView, resp3: bool, out: &mut BytesMut) {
    let masters: Vec<(usize, (u16, u16))> = (0..view.nodes.len())
        .filter_map(|i| view.range(i).map(|r| (i, r)))
        .collect();
    encode::array_header(out, masters.len());
    for (m, (a, b)) in masters {
        map_header(out, resp3, 2);
        encode::bulk(out, b"slots");
        encode::array_header(out, 2);
        encode::integer(out, i64::from(a));
        encode::integer(out, i64::from(b));
        encode::bulk(out, b"nodes");
        let members: Vec<usize> = std::iter::once(m)
            .chain((0..view.nodes.len()).filter(|&r| view.master_of(r) == Some(m)))
            .collect();
        encode::array_header(out, members.len());
        for i in members {
            let n = &view.nodes[i];
            let ip = ip(n);
            map_header(out, resp3, if ip.is_some() { 7 } else { 8 });
            encode::bulk(out, b"id");
            encode::bulk(out, n.id.as_bytes());
            encode::bulk(out, b"port");
            encode::integer(out, i64::from(n.port));
            encode::bulk(out, b"ip");
            encode::bulk(out, ip.unwrap_or("").as_bytes());
            encode::bulk(out, b"endpoint");
            encode::bulk(out, n.host.as_bytes());
            if ip.is_none() {
                encode::bulk(out, b"hostname");
                encode::bulk(out, n.host.as_bytes());
            }
            encode::bulk(out, b"role");
            let role: &[u8] = if i == m { b"master" } else { b"replica" };
            encode::bulk(out, role);
            encode::bulk(out, b"replication-offset");
            encode::integer(out, 0);
            encode::bulk(out, b"health");
            encode::bulk(out, b"online");
        }
    }
}

/// CLUSTER HELP: what a view answers, in the shape of Redis' help replies.
fn help(out: &mut BytesMut) {
    const LINES: &[&str] = &[
        "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "COUNT-FAILURE-REPORTS <node-id>",
        "    Return number of failure reports for <node-id> (always 0).",
        "INFO",
        "    Return information about the cluster.",
        "KEYSLOT <key>",
        "    Return the hash slot for <key>.",
        "LINKS",
        "    Return information about all network links between this node and its peers (none).",
        "MYID",
        "    Return the node id.",
        "NODES",
        "    Return cluster configuration seen by node. Output format:",
        "    <id> <ip:port@cport> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
        "REPLICAS <node-id>",
        "    Return <node-id> replicas.",
        "SHARDS",
        "    Return information about slot range mappings and the nodes associated with them.",
        "SLOTS",
        "    Return information about slots range mappings. Each range is made of:",
        "    start, end, master and replicas IP addresses, ports and ids",
        "The nodes are the rampart instances of the pool's cluster_view; every one serves every key.",
        "HELP",
        "    Prints this help.",
    ];
    encode::array_header(out, LINES.len());
    for l in LINES {
        encode::simple(out, l.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_config::{node_id, ViewSlots};

    fn view(slots: ViewSlots, me: usize, hosts: &[(&str, u16)]) -> ClusterView {
        ClusterView {
            nodes: hosts
                .iter()
                .map(|(h, p)| ViewNode {
                    host: h.to_string(),
                    port: *p,
                    id: node_id(h, *p),
                })
                .collect(),
            me,
            slots,
        }
    }

    fn text(b: &BytesMut) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn split_slots_in_resp2_and_resp3() {
        let v = view(
            ViewSlots::Split,
            0,
            &[("127.0.0.1", 7000), ("127.0.0.1", 7001)],
        );
        let (a, b) = (&v.nodes[0].id, &v.nodes[1].id);
        let mut out = BytesMut::new();
        slots(&v, false, &mut out);
        assert_eq!(
            text(&out),
            format!("*2\r\n*3\r\n:0\r\n:8191\r\n*4\r\n$9\r\n127.0.0.1\r\n:7000\r\n$40\r\n{a}\r\n*0\r\n*3\r\n:8192\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n{b}\r\n*0\r\n")
        );
        let mut out = BytesMut::new();
        slots(&v, true, &mut out);
        assert!(text(&out).ends_with(&format!("$40\r\n{b}\r\n%0\r\n")));
    }

    #[test]
    fn all_names_this_instance_master_and_the_others_its_replicas() {
        let v = view(
            ViewSlots::All,
            1,
            &[
                ("127.0.0.1", 7000),
                ("127.0.0.1", 7001),
                ("db.example", 7002),
            ],
        );
        let (a, b, c) = (&v.nodes[0].id, &v.nodes[1].id, &v.nodes[2].id);
        assert_eq!(
            nodes(&v),
            format!(
                "{a} 127.0.0.1:7000@0 slave {b} 0 0 2 connected\n{b} 127.0.0.1:7001@0 myself,master - 0 0 2 connected 0-16383\n{c} :7002@0,db.example slave {b} 0 0 2 connected\n"
            )
        );
        let mut out = BytesMut::new();
        slots(&v, false, &mut out);
        let t = text(&out);
        assert!(
            t.starts_with("*1\r\n*5\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n"),
            "{t}"
        );
        assert!(t.contains("$10\r\ndb.example\r\n:7002\r\n"), "{t}");
        assert!(info(&v).contains("cluster_known_nodes:3\r\ncluster_size:1\r\n"));
    }

    #[test]
    fn shards_are_maps_in_resp3_and_flat_arrays_in_resp2() {
        let v = view(ViewSlots::Split, 0, &[("127.0.0.1", 7000)]);
        let id = &v.nodes[0].id;
        let node = format!("$2\r\nid\r\n$40\r\n{id}\r\n$4\r\nport\r\n:7000\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n");
        let mut out = BytesMut::new();
        shards(&v, false, &mut out);
        assert_eq!(
            text(&out),
            format!("*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*14\r\n{node}")
        );
        let mut out = BytesMut::new();
        shards(&v, true, &mut out);
        assert_eq!(
            text(&out),
            format!("*1\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n%7\r\n{node}")
        );
    }

    #[test]
    fn split_info_counts_every_instance_as_a_master() {
        let v = view(ViewSlots::Split, 2, &[("a", 1), ("b", 1), ("c", 1)]);
        assert_eq!(
            info(&v),
            "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:3\r\ncluster_size:3\r\ncluster_current_epoch:3\r\ncluster_my_epoch:3\r\ncluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n"
        );
    }
}
