//! [`RedisCluster`]: a real Redis Cluster of `redis-server` processes (three primaries with
//! one replica each by default), created with `redis-cli --cluster create`.

use std::process::Command;
use std::time::Duration;

use crate::free_port;
use crate::process::{find_program, wait_until};
use crate::redis::RedisServer;
use crate::reply::Reply;

/// How a [`RedisCluster`] is built: primaries, replicas per primary, node timeout.
#[derive(Debug, Clone)]
pub struct ClusterSetup {
    primaries: usize,
    replicas: usize,
    node_timeout_ms: u64,
    full_coverage: bool,
    extra: Vec<String>,
    tls: Option<crate::TlsFiles>,
}

impl Default for ClusterSetup {
    fn default() -> Self {
        ClusterSetup {
            primaries: 3,
            replicas: 1,
            node_timeout_ms: 1000,
            full_coverage: true,
            extra: Vec::new(),
            tls: None,
        }
    }
}

impl ClusterSetup {
    /// Three primaries, one replica each, `cluster-node-timeout 1000` (ms).
    pub fn new() -> ClusterSetup {
        ClusterSetup::default()
    }

    /// Replicas per primary (0 or more).
    pub fn replicas(mut self, n: usize) -> ClusterSetup {
        self.replicas = n;
        self
    }

    /// `cluster-node-timeout` in milliseconds (how soon a dead primary is failed over).
    pub fn node_timeout_ms(mut self, ms: u64) -> ClusterSetup {
        self.node_timeout_ms = ms;
        self
    }

    /// `cluster-require-full-coverage` (default yes: every node refuses queries while a slot
    /// is unserved, for instance between a primary's failure and its replica's promotion).
    pub fn full_coverage(mut self, on: bool) -> ClusterSetup {
        self.full_coverage = on;
        self
    }

    /// More `redis-server` arguments for every node, for example
    /// `&["--busy-reply-threshold", "100"]`.
    pub fn server_args(mut self, args: &[&str]) -> ClusterSetup {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// A TLS port beside each node's plaintext one (`--tls-port`, with `files`, no client
    /// certificates asked for) and TLS on the cluster bus and replication (`--tls-cluster
    /// yes`, `--tls-replication yes`): a node then names its TLS port to TLS clients
    /// (`CLUSTER NODES`, `MOVED`) and its plaintext one to the others.
    pub fn tls(mut self, files: &crate::TlsFiles) -> ClusterSetup {
        self.tls = Some(files.clone());
        self
    }

    /// Starts the servers, creates the cluster and waits until every node says
    /// `cluster_state:ok` and they all agree on the owners of the 16384 slots.
    ///
    /// # Panics
    /// If a server does not start, `redis-cli --cluster create` fails, or the cluster is not
    /// ready within 30 s.
    pub fn start(self) -> RedisCluster {
        let total = self.primaries * (1 + self.replicas);
        let timeout = self.node_timeout_ms.to_string();
        let nodes: Vec<(RedisServer, (u16, Option<u16>))> = (0..total)
            .map(|_| {
                let bus = free_port();
                let bus_arg = bus.to_string();
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &timeout,
                    "--cluster-port",
                    &bus_arg,
                    "--cluster-require-full-coverage",
                    if self.full_coverage { "yes" } else { "no" },
                ];
                args.extend(self.extra.iter().map(String::as_str));
                let tls_port = free_port();
                let tls_args = self.tls.as_ref().map(|f| {
                    [
                        "--tls-port".to_string(),
                        tls_port.to_string(),
                        "--tls-cluster".into(),
                        "yes".into(),
                        "--tls-replication".into(),
                        "yes".into(),
                        "--tls-auth-clients".into(),
                        "no".into(),
                        "--tls-cert-file".into(),
                        f.cert.display().to_string(),
                        "--tls-key-file".into(),
                        f.key.display().to_string(),
                        "--tls-ca-cert-file".into(),
                        f.ca.display().to_string(),
                    ]
                });
                if let Some(t) = &tls_args {
                    args.extend(t.iter().map(String::as_str));
                }
                let node = RedisServer::start_with(&args);
                (node, (bus, self.tls.as_ref().map(|_| tls_port)))
            })
            .collect();
        let (nodes, ports): (Vec<RedisServer>, Vec<(u16, Option<u16>)>) = nodes.into_iter().unzip();
        let (buses, tls_ports): (Vec<u16>, Vec<Option<u16>>) = ports.into_iter().unzip();
        let mut cli = Command::new(find_program("redis-cli", "TESTKIT_REDIS_CLI"));
        cli.arg("--cluster").arg("create");
        for n in &nodes {
            cli.arg(n.addr());
        }
        cli.args(["--cluster-replicas", &self.replicas.to_string()])
            .arg("--cluster-yes");
        let out = create(cli, &nodes, &buses);
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster {
            nodes,
            tls_ports: tls_ports.into_iter().flatten().collect(),
        };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }
}

/// How long `redis-cli --cluster create` may take before it is killed (it waits for the
/// nodes to join with no limit of its own).
const CREATE_LIMIT: Duration = Duration::from_secs(90);
/// How long the nodes get to join by themselves before they are introduced again.
const JOIN_ALONE: Duration = Duration::from_secs(5);

/// Run `cli` (`redis-cli --cluster create ...`) to its end. A MEET whose handshake timed out
/// on a loaded machine leaves a node that knows none of the others while they all know it
/// (seen once: redis-cli then waited for the join for ever): past [`JOIN_ALONE`], every node
/// is asked to MEET every other one (`CLUSTER MEET ip port bus-port`, harmless for a node it
/// knows) every 2 s. Killed after [`CREATE_LIMIT`].
fn create(mut cli: Command, nodes: &[RedisServer], buses: &[u16]) -> std::process::Output {
    use std::process::Stdio;
    let started = std::time::Instant::now();
    let mut child = cli
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
    let mut next_meet = started + JOIN_ALONE;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(e) => panic!("redis-cli --cluster create: {e}"),
        }
        if started.elapsed() > CREATE_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().ok();
            panic!(
                "redis-cli --cluster create did not end within {CREATE_LIMIT:?}: {}",
                out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            );
        }
        if std::time::Instant::now() >= next_meet {
            next_meet += Duration::from_secs(2);
            meet_all(nodes, buses);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"))
}

/// Ask every node to MEET every other one.
fn meet_all(nodes: &[RedisServer], buses: &[u16]) {
    for a in nodes {
        let Ok(mut c) = crate::Client::try_connect(&a.addr()) else {
            continue;
        };
        c.set_read_timeout(Some(Duration::from_millis(500)));
        for (b, bus) in nodes.iter().zip(buses) {
            if b.port() != a.port() {
                let (port, bus) = (b.port().to_string(), bus.to_string());
                let _ = c.try_cmd(&["CLUSTER", "MEET", "127.0.0.1", &port, &bus]);
            }
        }
    }
}

/// A running Redis Cluster; every node is killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, in the order they were given to `redis-cli --cluster create` (the first
    /// ones start as primaries).
    pub nodes: Vec<RedisServer>,
    /// The TLS port of each node, in the order of `nodes` (empty without
    /// [`ClusterSetup::tls`]).
    tls_ports: Vec<u16>,
}

impl RedisCluster {
    /// `host:port` of every node, for a pool's `cluster:` seeds.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// `127.0.0.1:<TLS port>` of every node (empty without [`ClusterSetup::tls`]).
    pub fn tls_addrs(&self) -> Vec<String> {
        self.tls_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// Waits until every running node says `cluster_state:ok`, every node sees the same
    /// owner for each slot, and every replica's link to its primary is up.
    ///
    /// # Panics
    /// After `timeout`.
    pub fn wait_ok(&self, timeout: Duration) {
        wait_until(timeout, "the cluster to be ok and agreed", || {
            let mut views = Vec::new();
            for n in self.nodes.iter().filter(|n| n.pid() != 0) {
                let Ok(mut c) = crate::Client::try_connect(&n.addr()) else {
                    return false;
                };
                c.set_read_timeout(Some(Duration::from_millis(500)));
                let info = match c.try_cmd(&["CLUSTER", "INFO"]) {
                    Ok(Reply::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
                    _ => return false,
                };
                if !info.contains("cluster_state:ok") {
                    return false;
                }
                let repl = match c.try_cmd(&["INFO", "replication"]) {
                    Ok(Reply::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
                    _ => return false,
                };
                if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                    return false;
                }
                match c.try_cmd(&["CLUSTER", "SLOTS"]) {
                    Ok(r) => views.push(slot_owners(&r)),
                    Err(_) => return false,
                }
            }
            views.windows(2).all(|w| w[0] == w[1])
        });
    }

    /// The index in [`RedisCluster::nodes`] of the primary serving `key`'s slot (asked of
    /// node 0 with `CLUSTER KEYSLOT` and `CLUSTER SLOTS`).
    ///
    /// # Panics
    /// If the replies are not as expected.
    pub fn owner_of(&self, key: &str) -> usize {
        let first = self.nodes.iter().find(|n| n.pid() != 0).expect("a node");
        let slot = first
            .cmd(&["CLUSTER", "KEYSLOT", key])
            .as_int()
            .expect("CLUSTER KEYSLOT");
        self.owner_of_slot(slot as u16)
    }

    /// The index of the primary serving `slot`, as the first running node sees it.
    ///
    /// # Panics
    /// If no node serves it.
    pub fn owner_of_slot(&self, slot: u16) -> usize {
        let first = self.nodes.iter().find(|n| n.pid() != 0).expect("a node");
        let owners = slot_owners(&first.cmd(&["CLUSTER", "SLOTS"]));
        let port = owners
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, p)| *p)
            .unwrap_or_else(|| panic!("no node serves slot {slot}"));
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("slot {slot}: port {port} is not a node of the cluster"))
    }

    /// The node id (`CLUSTER MYID`) of node `i`.
    pub fn id(&self, i: usize) -> String {
        self.nodes[i]
            .cmd(&["CLUSTER", "MYID"])
            .as_str()
            .expect("CLUSTER MYID")
            .to_string()
    }

    /// The indexes of the nodes that are primaries now (by `ROLE`).
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].pid() != 0 && self.nodes[i].role() == "master")
            .collect()
    }

    /// A key whose slot node `i` serves, made of `prefix` and a number.
    ///
    /// # Panics
    /// If none of 10,000 candidates lands there.
    pub fn key_on(&self, i: usize, prefix: &str) -> String {
        let first = self.nodes.iter().find(|n| n.pid() != 0).expect("a node");
        let owners = slot_owners(&first.cmd(&["CLUSTER", "SLOTS"]));
        let port = self.nodes[i].port();
        for n in 0..10_000 {
            let key = format!("{prefix}{n}");
            let slot = crate::cluster_slot(key.as_bytes());
            if owners
                .iter()
                .any(|(a, b, p)| *p == port && (*a..=*b).contains(&slot))
            {
                return key;
            }
        }
        panic!("no key {prefix}N is served by node {i}");
    }
}

/// `(first slot, last slot, primary port)` of every range of a `CLUSTER SLOTS` reply, sorted.
fn slot_owners(r: &Reply) -> Vec<(u16, u16, u16)> {
    let mut out: Vec<(u16, u16, u16)> = r
        .as_array()
        .unwrap_or(&[])
        .iter()
        .filter_map(|range| {
            let items = range.as_array()?;
            let a = items.first()?.as_int()?;
            let b = items.get(1)?.as_int()?;
            let port = items.get(2)?.as_array()?.get(1)?.as_int()?;
            Some((a as u16, b as u16, port as u16))
        })
        .collect();
    out.sort_unstable();
    out
}
