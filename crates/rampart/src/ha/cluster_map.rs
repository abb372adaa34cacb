//! A Redis Cluster's map as one node states it: its `CLUSTER NODES` reply parsed (ids,
//! addresses, roles, config epochs, slots), asked of every node at once, and the map most
//! answers agree on.
//!
//! Why `CLUSTER NODES` and not `CLUSTER SLOTS` or `CLUSTER SHARDS`: it is the only one of
//! the three that gives each node's config epoch (Redis 7.0's `CLUSTER SHARDS` gives a health
//! field and hostnames but no epoch; `CLUSTER SLOTS` gives neither epochs nor health), and the
//! epoch is what says which of two answers is newer. It also flags failed nodes (`fail`,
//! `fail?`) and nodes without an address (`noaddr`, `handshake`), and has existed since 3.0.
//! Its cost is a text line per node per ask, parsed here.

use std::time::Duration;

use rampart_config::ServerAddr;

use crate::ha::link::{Link, Val};
use crate::handshake::Handshake;

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapNode {
    /// The node id (40 hex characters).
    pub id: String,
    /// Where it listens for clients.
    pub addr: ServerAddr,
    /// It is a primary (`master` flag).
    pub primary: bool,
    /// Its primary's id, for a replica.
    pub master: Option<String>,
    /// Its config epoch (a replica's is its primary's).
    pub epoch: u64,
    /// Flagged `fail` (the cluster agrees it is down).
    pub failed: bool,
    /// The slot ranges it serves.
    pub slots: Vec<(u16, u16)>,
}

/// Slot ranges with their owner's id and config epoch, sorted.
type Ownership<'a> = Vec<(u16, u16, &'a str, u64)>;

/// Every node's id, address and primary (for a replica), sorted by id.
type Members<'a> = Vec<(&'a str, &'a ServerAddr, Option<&'a str>)>;

/// One node's view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMap {
    /// Every node with an address.
    pub nodes: Vec<MapNode>,
}

impl ClusterMap {
    /// What two answers must share to count as the same map: the slot ownership (so they
    /// place every key alike) and the members, each at its address with its role (so a
    /// node that has not yet heard of another's new address, or of a node forgotten by the
    /// cluster, does not carry its old picture into an adopted map).
    fn layout(&self) -> (Ownership<'_>, Members<'_>) {
        let mut members: Members<'_> = self
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), &n.addr, n.master.as_deref()))
            .collect();
        members.sort_unstable_by(|a, b| a.0.cmp(b.0));
        (self.ownership(), members)
    }

    /// Whether `other` states the same map (see [`ClusterMap::layout`]).
    pub(crate) fn same_as(&self, other: &ClusterMap) -> bool {
        self.layout() == other.layout()
    }

    /// The slot ownership this map states, sorted: `(first, last, owner id, owner epoch)`.
    fn ownership(&self) -> Ownership<'_> {
        let mut v: Ownership<'_> = self
            .nodes
            .iter()
            .filter(|n| n.primary)
            .flat_map(|n| {
                n.slots
                    .iter()
                    .map(move |&(a, b)| (a, b, n.id.as_str(), n.epoch))
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Primaries that serve slots, ordered by their first slot.
    pub(crate) fn primaries(&self) -> Vec<&MapNode> {
        let mut p: Vec<&MapNode> = self
            .nodes
            .iter()
            .filter(|n| n.primary && !n.slots.is_empty())
            .collect();
        p.sort_by_key(|n| n.slots.iter().map(|s| s.0).min());
        p
    }

    /// The replicas of primary `id`.
    pub(crate) fn replicas_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a MapNode> + 'a {
        self.nodes
            .iter()
            .filter(move |n| !n.primary && n.master.as_deref() == Some(id))
    }
}

/// Most nodes a map may list: Redis Cluster is designed for up to 1,000 nodes. Each node of
/// a map is asked for its own map and may get health checks and connections, so one answer
/// that lists more (a broken or hostile node) is refused instead of followed.
pub const MAX_NODES: usize = 1000;

/// Parse a `CLUSTER NODES` reply given by the node at `asked` (whose host stands for an empty
/// one: a node that does not know its own address yet shows `:port`).
///
/// # Errors
/// A line that does not have the documented fields, a slot out of range, or more than
/// [`MAX_NODES`] lines.
pub fn parse_nodes(text: &str, asked: &ServerAddr) -> Result<ClusterMap, String> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if nodes.len() == MAX_NODES {
            return Err(format!(
                "CLUSTER NODES listed more than {MAX_NODES} nodes, more than a Redis Cluster has"
            ));
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return Err(format!("a CLUSTER NODES line with {} fields", f.len()));
        }
        let flags: Vec<&str> = f[2].split(',').collect();
        if flags.iter().any(|x| *x == "noaddr" || *x == "handshake") {
            continue;
        }
        let endpoint = f[1].split([',', '@']).next().unwrap_or("");
        let Some((host, port)) = endpoint.rsplit_once(':') else {
            return Err(format!("a node address {:?} without a port", f[1]));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("a node address {:?} with a bad port", f[1]))?;
        if port == 0 {
            continue;
        }
        let host = match (host, asked) {
            ("", ServerAddr::Tcp { host, .. }) => host.clone(),
            ("", ServerAddr::Unix(_)) => return Err("a node without an address".into()),
            (h, _) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        };
        let mut slots = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                continue; // a migration in progress, [slot->-id] / [slot-<-id]
            }
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let (a, b) = match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) if a <= b && usize::from(b) < crate::topology::cluster::SLOTS => {
                    (a, b)
                }
                _ => return Err(format!("a slot range {s:?}")),
            };
            slots.push((a, b));
        }
        nodes.push(MapNode {
            id: f[0].to_string(),
            addr: ServerAddr::Tcp { host, port },
            primary: flags.contains(&"master"),
            master: (f[3] != "-").then(|| f[3].to_string()),
            epoch: f[6].parse().unwrap_or(0),
            failed: flags.contains(&"fail"),
            slots,
        });
    }
    if nodes.is_empty() {
        return Err("CLUSTER NODES listed no node".into());
    }
    Ok(ClusterMap { nodes })
}

/// Ask `addr` for its map, within `limit`.
pub(crate) async fn ask(
    addr: &ServerAddr,
    handshake: &Handshake,
    limit: Duration,
) -> Result<ClusterMap, String> {
    let mut link = Link::open(addr, handshake, limit)
        .await
        .map_err(|e| e.to_string())?;
    let reply = link
        .call(&[&[b"CLUSTER", b"NODES"]], limit)
        .await
        .map_err(|e| e.to_string())?;
    match reply.first() {
        Some(Val::Str(s)) => parse_nodes(&String::from_utf8_lossy(s), addr),
        Some(other) => Err(format!("CLUSTER NODES answered {}", other.describe())),
        None => Err("no reply".into()),
    }
}

/// After the first map came back, how long the others are waited for at least; longer when
/// that first map took longer (as long again). A node that has not answered by then
/// (frozen, or behind a black hole) is left out of this round, so that it cannot delay a
/// map the others agree on (a failover's) by the whole ask deadline.
const ANSWER_GRACE: Duration = Duration::from_millis(100);

/// Ask every address at once; the maps that came back.
pub(crate) async fn ask_all(
    addrs: &[ServerAddr],
    handshake: &Handshake,
    limit: Duration,
) -> Vec<ClusterMap> {
    ask_all_why(addrs, handshake, limit).await.0
}

/// Ask every address at once, each within `limit`; the maps that came back, and why each
/// other address gave none (`"<address>: <reason>"`, in no particular order). Once one
/// address gave a map, the rest are waited for [`ANSWER_GRACE`] or as long again as that
/// first map took, whichever is longer (within `limit`).
pub(crate) async fn ask_all_why(
    addrs: &[ServerAddr],
    handshake: &Handshake,
    limit: Duration,
) -> (Vec<ClusterMap>, Vec<String>) {
    let started = tokio::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for a in addrs {
        let (a, h) = (a.clone(), handshake.clone());
        set.spawn(async move {
            let r = ask(&a, &h, limit).await;
            if let Err(e) = &r {
                tracing::debug!(node = %a, "cluster map not read: {e}");
            }
            (a, r)
        });
    }
    let (mut maps, mut why) = (Vec::new(), Vec::new());
    let mut answered: Vec<ServerAddr> = Vec::new();
    let mut cutoff: Option<tokio::time::Instant> = None;
    loop {
        let next = match cutoff {
            Some(c) => match tokio::time::timeout_at(c, set.join_next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => set.join_next().await,
        };
        let Some(r) = next else { break };
        // The clock starts with the first map, not with a fast refusal (a dead node's
        // connection is refused at once, long before a live one can answer).
        if cutoff.is_none() && matches!(r, Ok((_, Ok(_)))) {
            let now = tokio::time::Instant::now();
            cutoff = Some(now + (now - started).max(ANSWER_GRACE));
        }
        match r {
            Ok((a, Ok(m))) => {
                answered.push(a);
                maps.push(m);
            }
            Ok((a, Err(e))) => {
                why.push(format!("{a}: {e}"));
                answered.push(a);
            }
            Err(e) => why.push(format!("the ask did not finish: {e}")),
        }
    }
    // Dropping the set stops the asks still running.
    for a in addrs.iter().filter(|a| !answered.contains(a)) {
        why.push(format!(
            "{a}: no answer within {:?}, when another had given its map",
            cutoff.map_or(Duration::ZERO, |c| c - started)
        ));
    }
    (maps, why)
}

/// The map most answers agree on: the largest group of answers with the same slot
/// ownership and members (see `ClusterMap::same_as`), if two or more nodes gave it, or the
/// only answer when only one node was asked. `None` when no group has two (a lone node's
/// answer, whatever it says, never changes the map of a pool that knows several nodes).
pub fn agreed(maps: &[ClusterMap], asked: usize) -> Option<&ClusterMap> {
    let mut groups: Vec<((Ownership<'_>, Members<'_>), usize, &ClusterMap)> = Vec::new();
    for m in maps {
        let own = m.layout();
        match groups.iter_mut().find(|g| g.0 == own) {
            Some(g) => g.1 += 1,
            None => groups.push((own, 1, m)),
        }
    }
    let best = groups.iter().max_by_key(|g| g.1)?;
    (best.1 >= 2 || asked == 1).then_some(best.2)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :30001@31001,node-1 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
";

    pub(crate) fn at(port: u16) -> ServerAddr {
        ServerAddr::Tcp {
            host: "10.0.0.9".into(),
            port,
        }
    }

    #[test]
    fn answers_that_place_a_node_at_different_addresses_are_not_one_map() {
        let moved = parse_nodes(NODES, &at(30001)).expect("parses");
        let mut stale = moved.clone();
        for n in &mut stale.nodes {
            if n.id.starts_with("67ed") {
                n.addr = at(40002);
            }
        }
        // One node still names the old address, two the new one: the new one is taken,
        // whichever answer came first.
        let maps = vec![stale.clone(), moved.clone(), moved.clone()];
        assert_eq!(agreed(&maps, 3), Some(&moved));
        assert_eq!(agreed(&[stale.clone(), moved.clone()], 2), None);
        // A node some answers still list (not yet forgotten everywhere) is a difference too.
        let mut forgotten = moved.clone();
        forgotten.nodes.retain(|n| !n.id.starts_with("07c3"));
        let maps = vec![moved.clone(), forgotten.clone(), forgotten.clone()];
        assert_eq!(agreed(&maps, 3), Some(&forgotten));
    }

    fn tcp(addr: &str) -> ServerAddr {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        ServerAddr::Tcp {
            host: host.into(),
            port: port.parse().expect("port"),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_does_not_cut_short_the_wait_for_a_slower_map() {
        // A one-node cluster behind a link that delays it, and a port nobody listens on
        // (refused at once, as a killed node's).
        let node = testkit::RedisServer::start_with(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ]);
        assert_eq!(
            node.cmd(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]),
            testkit::Reply::ok()
        );
        let link = testkit::FaultLink::start(&node.addr());
        link.delay(Duration::from_millis(300));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let addrs = [tcp(&closed), tcp(&link.addr())];
        let hs = Handshake::new(None, None, 0);
        let (maps, why) = ask_all_why(&addrs, &hs, Duration::from_secs(5)).await;
        assert_eq!(maps.len(), 1, "{why:?}");
        assert_eq!(why.len(), 1, "{why:?}");
    }

    #[test]
    fn an_answer_listing_more_nodes_than_a_cluster_has_is_refused() {
        let line = |i: usize| {
            format!(
                "{i:040x} 10.1.{}.{}:6379@16379 master - 0 0 1 connected\n",
                i / 250,
                i % 250
            )
        };
        let most: String = (0..MAX_NODES).map(line).collect();
        assert_eq!(
            parse_nodes(&most, &at(1)).map(|m| m.nodes.len()),
            Ok(MAX_NODES)
        );
        let over: String = (0..MAX_NODES + 1).map(line).collect();
        let err = parse_nodes(&over, &at(1)).expect_err("refused");
        assert!(err.contains("more than 1000 nodes"), "{err}");
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(parse_nodes("abc 1.2.3.4:1@2 master", &at(1)).is_err());
        assert!(parse_nodes("", &at(1)).is_err());
        let bad_slot = "a 1.2.3.4:1@2 master - 0 0 1 connected 0-16384";
        assert!(parse_nodes(bad_slot, &at(1)).is_err());
    }

    #[test]
    fn a_lone_answer_that_disagrees_with_two_others_is_not_taken() {
        let good = parse_nodes(NODES, &at(30001)).expect("parses");
        let mut stale = good.clone();
        for n in &mut stale.nodes {
            if n.id.starts_with("67ed") {
                n.slots = vec![(5461, 10000)];
            }
        }
        let maps = vec![stale.clone(), good.clone(), good.clone()];
        assert_eq!(agreed(&maps, 3), Some(&good));
        assert_eq!(
            agreed(&[stale.clone(), good.clone()], 2),
            None,
            "one against one"
        );
        assert_eq!(
            agreed(std::slice::from_ref(&stale), 6),
            None,
            "one of six answered"
        );
        assert_eq!(
            agreed(std::slice::from_ref(&stale), 1),
            Some(&stale),
            "one asked"
        );
    }
}
