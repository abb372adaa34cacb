//! The pool key `cluster_view:`: rampart presenting itself as a Redis Cluster whose nodes are
//! rampart instances, so cluster-aware clients spread their load over several instances.
//!
//! ```yaml
//! cluster_view:
//!   nodes: [10.0.0.5:22121, 10.0.0.6:22121]   # the pool's listen address on each instance
//!   me: 10.0.0.5:22121                        # only when `listen` names no one address
//!   slots: split                              # or `all`
//! ```

use std::fmt;

use md5::{Digest, Md5};

use crate::addr::{fmt_host_port, parse_sentinel};
use crate::error::{AddrError, ConfigError, Problem};
use crate::pool::{Fields, Lookup};
use crate::raw::{Pos, RawValue};
use crate::Listen;

/// The keys of `cluster_view:`.
const VIEW_KEYS: &[&str] = &["nodes", "me", "slots"];

/// Most instances a view lists.
pub const CLUSTER_VIEW_MAX_NODES: usize = 1024;

/// Number of Redis Cluster hash slots.
const SLOTS: u32 = 16384;

/// How the listed instances share the 16,384 slots in the view's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewSlots {
    /// The slots are split into one contiguous range per instance, evenly and in list order
    /// (the default): a cluster client sends each key to the instance of its slot, so the
    /// load spreads by key.
    #[default]
    Split,
    /// This instance answers as the master of all 16,384 slots and names the other instances
    /// as its replicas: a cluster client stays on the instance it asked first, and knows the
    /// others for reads from replicas and for asking again when this one is gone.
    All,
}

/// One rampart instance of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewNode {
    /// The host as written (an IPv6 address without brackets).
    pub host: String,
    /// The port: the pool's listen port on that instance.
    pub port: u16,
    /// The node id clients see: 40 lowercase hex digits derived from the address (see
    /// [`node_id`]), so every instance gives every other the same id.
    pub id: String,
}

impl fmt::Display for ViewNode {
    /// `host:port` (an IPv6 host in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_host_port(f, &self.host, self.port)
    }
}

/// A pool's `cluster_view:`: the rampart instances clients see as the nodes of a Redis
/// Cluster, and which one is this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The instances in file order (1 to [`CLUSTER_VIEW_MAX_NODES`], no address twice).
    pub nodes: Vec<ViewNode>,
    /// The index in `nodes` of this instance: the entry named by `me:`, else the one equal to
    /// the pool's `listen` address.
    pub me: usize,
    /// How the slots are shared (`slots:`, default `split`).
    pub slots: ViewSlots,
}

impl ClusterView {
    /// The slot range (first, last; inclusive) that node `i` answers as master of, or `None`
    /// when it is a replica in the view (`slots: all`, every node but this one).
    pub fn range(&self, i: usize) -> Option<(u16, u16)> {
        match self.slots {
            ViewSlots::All => (i == self.me).then_some((0, (SLOTS - 1) as u16)),
            ViewSlots::Split => {
                let n = self.nodes.len() as u32;
                let i = u32::try_from(i).ok().filter(|i| *i < n)?;
                let first = i * SLOTS / n;
                let next = (i + 1) * SLOTS / n;
                Some((first as u16, (next - 1) as u16))
            }
        }
    }

    /// The index of the master node `i` replicates in the view (`slots: all`: this instance
    /// for every other), or `None` for a master.
    pub fn master_of(&self, i: usize) -> Option<usize> {
        match self.slots {
            ViewSlots::All if i != self.me => Some(self.me),
            _ => None,
        }
    }
}

impl fmt::Display for ClusterView {
    /// `nodes [a b] me a slots split`, for reload messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(ToString::to_string).collect();
        let slots = match self.slots {
            ViewSlots::Split => "split",
            ViewSlots::All => "all",
        };
        write!(
            f,
            "nodes [{}] me {} slots {slots}",
            nodes.join(" "),
            self.nodes
                .get(self.me)
                .map(ToString::to_string)
                .unwrap_or_default()
        )
    }
}

/// The node id of the instance at `host:port`: the MD5 digest of the address as rampart
/// prints it (`host:port`, the host in lower case, an IPv6 host in brackets), then the first
/// four bytes of the MD5 digest of that digest, as 40 lowercase hex digits.
pub fn node_id(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    let text = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let first: [u8; 16] = Md5::digest(text.as_bytes()).into();
    let second: [u8; 16] = Md5::digest(first).into();
    let mut id = String::with_capacity(40);
    for b in first.iter().chain(&second[..4]) {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// What is wrong with a `cluster_view:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewProblem {
    /// `nodes:` is missing or empty.
    #[error("cluster_view.nodes: list the pool's listen address (host:port) of every rampart instance in the view, this one included")]
    NoNodes,
    /// More nodes than [`CLUSTER_VIEW_MAX_NODES`].
    #[error("cluster_view.nodes: {0} instances; at most {CLUSTER_VIEW_MAX_NODES}")]
    TooManyNodes(usize),
    /// A node that is not `host:port`.
    #[error("cluster_view.nodes: {value:?}: {reason}")]
    BadNode {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: AddrError,
    },
    /// The same address twice.
    #[error("cluster_view.nodes: duplicate address {addr:?} (first given on line {first_line})")]
    DuplicateNode {
        /// The address.
        addr: String,
        /// Line of the first one.
        first_line: u32,
    },
    /// `me:` that is not `host:port`.
    #[error("cluster_view.me: {value:?}: {reason}")]
    BadMe {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: AddrError,
    },
    /// `me:` names no listed node.
    #[error("cluster_view.me: {0} is not among cluster_view.nodes")]
    MeNotListed(String),
    /// No `me:`, and the pool listens on an address that names no one instance.
    #[error("cluster_view: the pool listens on {0}, which does not say which of cluster_view.nodes is this instance; name it with cluster_view.me")]
    NeedMe(String),
    /// No `me:`, and the listen address is not among the nodes.
    #[error("cluster_view: this instance's listen address {0} is not among cluster_view.nodes; add it, or name this instance's entry with cluster_view.me")]
    ListenNotListed(String),
    /// `slots:` other than `split` or `all`.
    #[error("cluster_view.slots: {0:?} is neither split nor all")]
    BadSlots(String),
}

impl Fields<'_> {
    /// `cluster_view:`, if present; `listen` is the pool's listen address.
    pub(crate) fn cluster_view(
        &self,
        get: &Lookup<'_, '_>,
        listen: &Listen,
    ) -> Result<Option<ClusterView>, ConfigError> {
        let Some(entry) = get("cluster_view") else {
            return Ok(None);
        };
        let entries = match &entry.value {
            RawValue::Entries(entries) => entries,
            RawValue::Empty => return Err(self.err(entry.pos, Problem::EmptyValue("cluster_view"))),
            _ => return Err(self.err(entry.pos, Problem::NotMapping("cluster_view"))),
        };
        let map = self.index_nested(entries, VIEW_KEYS, "cluster_view")?;
        let bad = |pos: Pos, p: ViewProblem| self.err(pos, Problem::ClusterView(Box::new(p)));

        let nodes_entry = map
            .get("nodes")
            .ok_or_else(|| bad(entry.key.pos, ViewProblem::NoNodes))?;
        let items: Vec<(&str, Pos)> = match &nodes_entry.value {
            RawValue::Items(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match &item.value {
                        RawValue::Scalar(text) => out.push((text.as_str(), item.pos)),
                        _ => return Err(self.err(item.pos, Problem::NotList("cluster_view.nodes"))),
                    }
                }
                out
            }
            RawValue::Empty => return Err(bad(nodes_entry.pos, ViewProblem::NoNodes)),
            _ => {
                return Err(self.err(nodes_entry.pos, Problem::NotList("cluster_view.nodes")));
            }
        };
        if items.is_empty() {
            return Err(bad(nodes_entry.pos, ViewProblem::NoNodes));
        }
        if items.len() > CLUSTER_VIEW_MAX_NODES {
            return Err(bad(nodes_entry.pos, ViewProblem::TooManyNodes(items.len())));
        }
        let mut nodes: Vec<ViewNode> = Vec::with_capacity(items.len());
        let mut lines: Vec<u32> = Vec::with_capacity(items.len());
        for (text, pos) in items {
            let (host, port) = parse_sentinel(text).map_err(|reason| {
                let value = text.to_string();
                bad(pos, ViewProblem::BadNode { value, reason })
            })?;
            if let Some(i) = position(&nodes, &host, port) {
                let addr = nodes[i].to_string();
                let first_line = lines[i];
                return Err(bad(pos, ViewProblem::DuplicateNode { addr, first_line }));
            }
            let id = node_id(&host, port);
            nodes.push(ViewNode { host, port, id });
            lines.push(pos.line);
        }

        let me = match map.get("me") {
            Some(e) => {
                let RawValue::Scalar(text) = &e.value else {
                    return Err(self.err(e.pos, Problem::EmptyValue("cluster_view.me")));
                };
                let (host, port) = parse_sentinel(text).map_err(|reason| {
                    let value = text.to_string();
                    bad(e.pos, ViewProblem::BadMe { value, reason })
                })?;
                position(&nodes, &host, port).ok_or_else(|| {
                    let shown = Shown(&host, port).to_string();
                    bad(e.pos, ViewProblem::MeNotListed(shown))
                })?
            }
            None => match listen {
                Listen::Tcp { host, port } if !is_wildcard(host) => position(&nodes, host, *port)
                    .ok_or_else(|| {
                    bad(
                        entry.key.pos,
                        ViewProblem::ListenNotListed(listen.to_string()),
                    )
                })?,
                _ => return Err(bad(entry.key.pos, ViewProblem::NeedMe(listen.to_string()))),
            },
        };

        let slots = match map.get("slots").map(|e| (&e.value, e.pos)) {
            None => ViewSlots::Split,
            Some((RawValue::Scalar(text), pos)) => match text.trim() {
                "split" => ViewSlots::Split,
                "all" => ViewSlots::All,
                other => return Err(bad(pos, ViewProblem::BadSlots(other.to_string()))),
            },
            Some((_, pos)) => return Err(self.err(pos, Problem::EmptyValue("cluster_view.slots"))),
        };
        Ok(Some(ClusterView { nodes, me, slots }))
    }
}

/// `host:port` for messages.
struct Shown<'a>(&'a str, u16);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_host_port(f, self.0, self.1)
    }
}

/// The index of the node at `host:port` (host names compared without case).
fn position(nodes: &[ViewNode], host: &str, port: u16) -> Option<usize> {
    nodes
        .iter()
        .position(|n| n.port == port && n.host.eq_ignore_ascii_case(host))
}

/// Whether a listen host accepts on every address (so it names no one instance).
fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "::" | "*" | "0:0:0:0:0:0:0:0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ClusterView, String> {
        let text = format!("demo:\n  servers:\n    - 127.0.0.1:7000:1\n{body}");
        crate::parse(&text, "t.yml")
            .map(|mut c| c.pools.remove(0).cluster_view.expect("a view"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn split_ranges_cover_every_slot_once_in_list_order() {
        let v = parse(
            "  listen: 127.0.0.1:7101\n  cluster_view:\n    nodes: [127.0.0.1:7100, 127.0.0.1:7101, 127.0.0.1:7102]\n",
        )
        .unwrap();
        assert_eq!(v.me, 1);
        assert_eq!(v.slots, ViewSlots::Split);
        assert_eq!(v.range(0), Some((0, 5460)));
        assert_eq!(v.range(1), Some((5461, 10921)));
        assert_eq!(v.range(2), Some((10922, 16383)));
        assert_eq!(v.range(3), None);
        for n in [1usize, 2, 3, 7, 1024] {
            let v = ClusterView {
                nodes: (0..n)
                    .map(|i| ViewNode {
                        host: "h".into(),
                        port: i as u16 + 1,
                        id: String::new(),
                    })
                    .collect(),
                me: 0,
                slots: ViewSlots::Split,
            };
            let mut next = 0u32;
            for i in 0..n {
                let (a, b) = v.range(i).unwrap();
                assert_eq!(u32::from(a), next, "{n} nodes, node {i}");
                assert!(b >= a);
                next = u32::from(b) + 1;
            }
            assert_eq!(next, 16384, "{n} nodes");
        }
    }

    #[test]
    fn all_makes_this_instance_the_master_of_every_slot() {
        let v = parse(
            "  listen: 0.0.0.0:7100\n  cluster_view:\n    nodes:\n      - a.example:7100\n      - B.example:7100\n    me: b.example:7100\n    slots: all\n",
        )
        .unwrap();
        assert_eq!(v.me, 1);
        assert_eq!(v.range(1), Some((0, 16383)));
        assert_eq!(v.range(0), None);
        assert_eq!(v.master_of(0), Some(1));
        assert_eq!(v.master_of(1), None);
    }

    #[test]
    fn node_ids_are_stable_hex_derived_from_the_address() {
        let id = node_id("127.0.0.1", 7000);
        assert_eq!(id.len(), 40);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // MD5("127.0.0.1:7000") starts the id.
        let md5: [u8; 16] = Md5::digest(b"127.0.0.1:7000").into();
        assert!(id.starts_with(&format!("{:02x}{:02x}", md5[0], md5[1])));
        assert_eq!(node_id("Host.Example", 1), node_id("host.example", 1));
        assert_ne!(node_id("127.0.0.1", 7000), node_id("127.0.0.1", 7001));
        assert_eq!(node_id("::1", 7000), {
            let v =
                parse("  listen: \"[::1]:7000\"\n  cluster_view:\n    nodes: [\"[::1]:7000\"]\n")
                    .unwrap();
            v.nodes[0].id.clone()
        });
    }

    #[test]
    fn refusals_say_what_and_where() {
        let cases = [
            (
                "  listen: 127.0.0.1:7100\n  cluster_view:\n    nodes: [127.0.0.1:7101]\n",
                "t.yml:5:3: pool \"demo\": cluster_view: this instance's listen address 127.0.0.1:7100 is not among cluster_view.nodes; add it, or name this instance's entry with cluster_view.me",
            ),
            (
                "  listen: 0.0.0.0:7100\n  cluster_view:\n    nodes: [127.0.0.1:7100]\n",
                "t.yml:5:3: pool \"demo\": cluster_view: the pool listens on 0.0.0.0:7100, which does not say which of cluster_view.nodes is this instance; name it with cluster_view.me",
            ),
            (
                "  listen: 0.0.0.0:7100\n  cluster_view:\n    nodes: [127.0.0.1:7100]\n    me: 127.0.0.1:7200\n",
                "t.yml:7:9: pool \"demo\": cluster_view.me: 127.0.0.1:7200 is not among cluster_view.nodes",
            ),
            (
                "  listen: 127.0.0.1:7100\n  cluster_view:\n    nodes: [127.0.0.1:7100, 127.0.0.1:7100]\n",
                "t.yml:6:29: pool \"demo\": cluster_view.nodes: duplicate address \"127.0.0.1:7100\" (first given on line 6)",
            ),
            (
                "  listen: 127.0.0.1:7100\n  cluster_view:\n    nodes: [127.0.0.1]\n",
                "t.yml:6:13: pool \"demo\": cluster_view.nodes: \"127.0.0.1\": expected \"host:port\"",
            ),
            (
                "  listen: 127.0.0.1:7100\n  cluster_view:\n    nodes: [127.0.0.1:7100]\n    slots: half\n",
                "t.yml:7:12: pool \"demo\": cluster_view.slots: \"half\" is neither split nor all",
            ),
            (
                "  listen: 127.0.0.1:7100\n  cluster_view:\n    nodes: []\n",
                "t.yml:6:12: pool \"demo\": cluster_view.nodes: list the pool's listen address (host:port) of every rampart instance in the view, this one included",
            ),
            (
                "  listen: 127.0.0.1:7100\n  cluster_view:\n    node: [127.0.0.1:7100]\n",
                "t.yml:6:5: pool \"demo\": cluster_view: unknown key \"node\" (did you mean \"nodes\"?)",
            ),
        ];
        for (body, want) in cases {
            let got = parse(body).expect_err(body);
            assert_eq!(got, want, "{body}");
        }
    }

    #[test]
    fn a_pool_without_the_key_has_no_view() {
        let c = crate::parse(
            "demo:\n  listen: 127.0.0.1:7100\n  servers:\n    - 127.0.0.1:7000:1\n",
            "t.yml",
        )
        .unwrap();
        assert_eq!(c.pools[0].cluster_view, None);
    }
}
