//! `GET /metrics`: the Prometheus text exposition, written by hand from the same counters as
//! the twemproxy stats JSON.
//!
//! Every metric family is declared once in [`FAMILIES`] with its type and help text; the
//! renderer writes a family's `# HELP` and `# TYPE` lines before its first sample and a unit
//! test checks that no name repeats. Node series carry `pool`, `shard` and `node` labels; the
//! node's role is a separate info-style gauge (`rampart_node_role{role=...} 1`) so a switchover
//! does not start new series for every counter of the node (join on the three labels to
//! break counters down by role).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use crate::clock::now_ms;
use crate::observe::events::Event;
use crate::observe::stats::{PoolStat, ServerStat, LATENCY_BUCKETS_US};
use crate::topology::node::{NodeRt, Role};
use crate::topology::Shared;

use super::probe::Probes;

/// One metric family: name, Prometheus type and help text.
#[derive(Debug)]
pub struct Family {
    /// Full name (for histograms, without the `_bucket`/`_sum`/`_count` suffix).
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// One line saying what it measures.
    pub help: &'static str,
}

macro_rules! families {
    ($($id:ident = ($name:literal, $kind:literal, $help:literal);)*) => {
        $(const $id: Family = Family { name: $name, kind: $kind, help: $help };)*
        /// Every family `/metrics` can expose, in output order.
        pub const FAMILIES: &[Family] = &[$($id,)*];
    };
}

families! {
    BUILD_INFO = ("rampart_build_info", "gauge", "Always 1; the version label says which rampart this is.");
    UPTIME = ("rampart_process_uptime_seconds", "gauge", "Seconds since the process started.");
    RSS = ("rampart_process_resident_memory_bytes", "gauge", "Resident memory of the process.");
    FDS = ("rampart_process_open_fds", "gauge", "Open file descriptors of the process.");
    WORKERS = ("rampart_workers", "gauge", "Worker threads.");
    CONNS_ACCEPTED = ("rampart_client_connections_accepted_total", "counter", "Client connections accepted, all pools.");
    CONNS_OPEN = ("rampart_client_connections_open", "gauge", "Client connections open, all pools.");
    REQUESTS_ANSWERED = ("rampart_client_requests_total", "counter", "Client requests answered, all pools, including local replies.");
    RELOADS = ("rampart_config_reloads_total", "counter", "Configuration reloads attempted (SIGHUP or the admin API).");
    RELOAD_FAILURES = ("rampart_config_reload_failures_total", "counter", "Configuration reloads refused; the running configuration stayed.");
    HELD_WRITES = ("rampart_held_writes_total", "counter", "Writes that waited in a failover hold because their shard had no primary.");
    HELD_RELEASED = ("rampart_held_writes_released_total", "counter", "Held writes sent to a primary once there was one.");
    HELD_FAILED = ("rampart_held_writes_failed_total", "counter", "Held writes answered with an error (failover_hold or its byte bound passed, or the shard was down).");
    HELD_NOW = ("rampart_held_writes", "gauge", "Writes waiting in a failover hold now.");
    HOLD_SECONDS = ("rampart_held_write_seconds_total", "counter", "Total time released writes spent held.");
    POOL_CLIENTS = ("rampart_pool_client_connections", "gauge", "Client connections open on the pool.");
    POOL_CLIENT_EOF = ("rampart_pool_client_eof_total", "counter", "Client connections the client closed.");
    POOL_CLIENT_ERR = ("rampart_pool_client_errors_total", "counter", "Client connections closed on an error.");
    POOL_FORWARD_ERR = ("rampart_pool_forward_errors_total", "counter", "Requests answered with an error because no server could take them.");
    POOL_FRAGMENTS = ("rampart_pool_fragments_total", "counter", "Sub-requests made by splitting multi-key requests.");
    POOL_SERVER_EJECTS = ("rampart_pool_server_ejects_total", "counter", "Times a server was ejected from the ring (twemproxy auto_eject_hosts).");
    SHARD_WRITABLE = ("rampart_shard_writable", "gauge", "1 when the shard has a healthy primary that says role:master and is on the ring.");
    SHARD_EJECTED = ("rampart_shard_ejected", "gauge", "1 while the shard is off the ring (twemproxy auto_eject_hosts).");
    SHARD_SWITCHING = ("rampart_shard_switchover_running", "gauge", "1 while a planned switchover holds the shard's writes.");
    SHARD_FAILOVERS = ("rampart_shard_failovers_total", "counter", "Primary changes of the shard made by Sentinel or seen by checks (counted from the event log).");
    SHARD_SWITCHOVERS = ("rampart_shard_switchovers_total", "counter", "Planned switchover events of the shard (counted from the event log).");
    NODE_ROLE = ("rampart_node_role", "gauge", "Always 1; role is the node's configured role in the shard view (primary or replica), seen is what its last ROLE reply said.");
    NODE_UP = ("rampart_node_up", "gauge", "1 when the node passes its health checks (admin PING probe for twemproxy pools).");
    NODE_ROUTABLE = ("rampart_node_routable", "gauge", "1 when the node may receive new requests (up, not ejected, not in maintenance).");
    NODE_MAINT = ("rampart_node_maintenance", "gauge", "1 while the node is drained for maintenance.");
    NODE_EJECTED = ("rampart_node_ejected", "gauge", "1 while passive failures keep the node out of rotation.");
    NODE_EJECTIONS = ("rampart_node_ejections_total", "counter", "Times passive failures on live traffic ejected the node.");
    NODE_CHECK = ("rampart_node_health_check_duration_seconds", "gauge", "Round trip of the node's last health check.");
    NODE_CHECK_AGE = ("rampart_node_last_check_age_seconds", "gauge", "Seconds since the node's last health check finished (absent before the first).");
    NODE_LAG = ("rampart_node_replication_lag_seconds", "gauge", "Replication lag of a replica at its last check.");
    NODE_REQUESTS = ("rampart_node_requests_total", "counter", "Requests sent to the node.");
    NODE_RESPONSES = ("rampart_node_responses_total", "counter", "Replies received from the node.");
    NODE_ERRORS = ("rampart_node_errors_total", "counter", "Connection failures by kind: server_err (connect failed or broke), server_eof (server closed), server_timedout (request deadline passed).");
    NODE_SENT = ("rampart_node_sent_bytes_total", "counter", "Request bytes sent to the node.");
    NODE_RECEIVED = ("rampart_node_received_bytes_total", "counter", "Reply bytes received from the node.");
    NODE_CONNS = ("rampart_node_server_connections", "gauge", "Open connections to the node, all workers.");
    NODE_QUEUED = ("rampart_node_queued_requests", "gauge", "Requests waiting at the node: state=unsent (queued) or state=inflight (written, no reply yet).");
    NODE_QUEUED_BYTES = ("rampart_node_queued_bytes", "gauge", "Bytes of requests waiting at the node, by state as rampart_node_queued_requests.");
    EVENTS = ("rampart_events_total", "counter", "Operator events (node up/down/ejected, maintenance, failover, switchover, reload) since the admin interface started counting.");
    COMMAND_CALLS = ("rampart_command_calls_total", "counter", "Requests answered, by command.");
    COMMAND_DURATION = ("rampart_command_duration_seconds", "histogram", "Time from reading a request to writing its reply, by command.");
}

/// Counts events out of the bounded event log into monotonic totals: each scrape adds the
/// events recorded since the previous one.
#[derive(Debug, Default)]
pub struct EventTally {
    inner: Mutex<TallyState>,
}

#[derive(Debug, Default)]
struct TallyState {
    last: Option<Event>,
    counts: HashMap<(String, String, String), u64>,
}

fn same_event(a: &Event, b: &Event) -> bool {
    a.at_ms == b.at_ms
        && a.kind == b.kind
        && a.pool == b.pool
        && a.shard == b.shard
        && a.node == b.node
        && a.message == b.message
}

/// The snake_case name of an event kind, as the API spells it.
pub fn kind_name(e: &Event) -> String {
    serde_json::to_value(e.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".into())
}

impl EventTally {
    /// Take in the events of `log` (oldest first) not seen before; return the totals keyed by
    /// (kind, pool, shard).
    pub fn update(&self, log: &[Event]) -> Tally {
        let Ok(mut st) = self.inner.lock() else {
            return HashMap::new();
        };
        let start = match &st.last {
            // The newest event seen last time; everything after it is new. When it has been
            // evicted (more than the log's capacity in between), everything is new.
            Some(last) => log
                .iter()
                .rposition(|e| same_event(e, last))
                .map_or(0, |i| i + 1),
            None => 0,
        };
        for e in &log[start.min(log.len())..] {
            *st.counts
                .entry((kind_name(e), e.pool.clone(), e.shard.clone()))
                .or_insert(0) += 1;
        }
        if let Some(e) = log.last() {
            st.last = Some(e.clone());
        }
        st.counts.clone()
    }
}

/// Text being built, with the family whose samples are being written.
struct Out {
    text: String,
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

impl Out {
    fn head(&mut self, f: &Family) {
        let _ = writeln!(self.text, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(self.text, "# TYPE {} {}", f.name, f.kind);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", fmt_value(value));
    }
}

fn fmt_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn b(x: bool) -> f64 {
    if x {
        1.0
    } else {
        0.0
    }
}

/// Resident set size from `/proc/self/status` (`VmRSS`, in kB).
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Number of open descriptors (entries of `/proc/self/fd`).
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

type NodeRow<'a> = (&'a str, &'a str, &'a NodeRt, &'static str);

/// Every node with its pool, shard and configured role.
fn nodes(shared: &Shared) -> Vec<(String, String, std::sync::Arc<NodeRt>, &'static str)> {
    let mut v = Vec::new();
    for p in super::pools(shared).iter() {
        for s in &p.shards {
            let view = s.view();
            for (i, n) in view.nodes.iter().enumerate() {
                let role = if view.primary == Some(i) {
                    "primary"
                } else {
                    "replica"
                };
                v.push((p.conf.name.clone(), s.name.clone(), n.clone(), role));
            }
        }
    }
    v
}

fn seen_role(n: &NodeRt) -> &'static str {
    match n.role() {
        Role::Primary => "primary",
        Role::Replica => "replica",
        Role::Unknown => "unknown",
    }
}

/// Render the whole exposition.
pub fn render(shared: &Shared, probes: &Probes, tally: &EventTally) -> String {
    let mut o = Out {
        text: String::with_capacity(16 * 1024),
    };
    let counts = tally.update(&crate::observe::events::recent());
    process(&mut o, shared);
    pools(&mut o, shared);
    shards(&mut o, shared, &counts);
    let owned = nodes(shared);
    let rows: Vec<NodeRow<'_>> = owned
        .iter()
        .map(|(p, s, n, r)| (p.as_str(), s.as_str(), n.as_ref(), *r))
        .collect();
    node_health(&mut o, &rows, probes);
    node_traffic(&mut o, &rows);
    events(&mut o, counts);
    commands(&mut o, shared);
    o.text
}

fn process(o: &mut Out, shared: &Shared) {
    let m = &shared.metrics;
    o.head(&BUILD_INFO);
    o.sample(
        BUILD_INFO.name,
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    o.head(&UPTIME);
    o.sample(UPTIME.name, &[], shared.started.elapsed().as_secs_f64());
    if let Some(rss) = resident_bytes() {
        o.head(&RSS);
        o.sample(RSS.name, &[], rss as f64);
    }
    if let Some(fds) = open_fds() {
        o.head(&FDS);
        o.sample(FDS.name, &[], fds as f64);
    }
    o.head(&WORKERS);
    o.sample(WORKERS.name, &[], shared.workers as f64);
    for (f, v) in [
        (&CONNS_ACCEPTED, m.global_sum(|w| &w.total_connections)),
        (&CONNS_OPEN, m.global_sum(|w| &w.curr_connections)),
        (&REQUESTS_ANSWERED, m.global_sum(|w| &w.commands)),
        (&RELOADS, shared.reloads.load(Relaxed) as i64),
        (
            &RELOAD_FAILURES,
            shared.reload_failures.load(Relaxed) as i64,
        ),
    ] {
        o.head(f);
        o.sample(f.name, &[], v as f64);
    }
    let (entered, released, failed, held_us) = crate::upstream::hold::stats();
    for (f, v) in [
        (&HELD_WRITES, entered as f64),
        (&HELD_RELEASED, released as f64),
        (&HELD_FAILED, failed as f64),
        (&HELD_NOW, entered.saturating_sub(released + failed) as f64),
        (&HOLD_SECONDS, held_us as f64 / 1e6),
    ] {
        o.head(f);
        o.sample(f.name, &[], v);
    }
}

fn pools(o: &mut Out, shared: &Shared) {
    for (f, stat) in [
        (&POOL_CLIENTS, PoolStat::ClientConnections),
        (&POOL_CLIENT_EOF, PoolStat::ClientEof),
        (&POOL_CLIENT_ERR, PoolStat::ClientErr),
        (&POOL_FORWARD_ERR, PoolStat::ForwardError),
        (&POOL_FRAGMENTS, PoolStat::Fragments),
        (&POOL_SERVER_EJECTS, PoolStat::ServerEjects),
    ] {
        o.head(f);
        for p in super::pools(shared).iter() {
            let v = shared.metrics.pool_sum(p.index, stat);
            o.sample(f.name, &[("pool", &p.conf.name)], v as f64);
        }
    }
}

/// Event totals keyed by (kind, pool, shard).
pub type Tally = HashMap<(String, String, String), u64>;

fn shards(o: &mut Out, shared: &Shared, counts: &Tally) {
    let each = |o: &mut Out, f: &Family, value: &dyn Fn(&crate::topology::ShardRt) -> f64| {
        o.head(f);
        for p in super::pools(shared).iter() {
            for s in &p.shards {
                o.sample(
                    f.name,
                    &[("pool", &p.conf.name), ("shard", &s.name)],
                    value(s),
                );
            }
        }
    };
    each(o, &SHARD_WRITABLE, &|s| {
        b(!s.is_ejected() && s.view().writable_primary().is_some())
    });
    each(o, &SHARD_EJECTED, &|s| b(s.is_ejected()));
    each(o, &SHARD_SWITCHING, &|s| b(s.is_switching()));
    for (f, kind) in [
        (&SHARD_FAILOVERS, "failover"),
        (&SHARD_SWITCHOVERS, "switchover"),
    ] {
        o.head(f);
        for p in super::pools(shared).iter() {
            for s in &p.shards {
                let key = (kind.to_string(), p.conf.name.clone(), s.name.clone());
                let v = counts.get(&key).copied().unwrap_or(0);
                o.sample(
                    f.name,
                    &[("pool", &p.conf.name), ("shard", &s.name)],
                    v as f64,
                );
            }
        }
    }
}

fn node_health(o: &mut Out, rows: &[NodeRow<'_>], probes: &Probes) {
    o.head(&NODE_ROLE);
    for (p, s, n, role) in rows {
        let labels = [
            ("pool", *p),
            ("shard", *s),
            ("node", n.label.as_str()),
            ("role", *role),
            ("seen", seen_role(n)),
        ];
        o.sample(NODE_ROLE.name, &labels, 1.0);
    }
    let health: Vec<super::probe::Health> = rows.iter().map(|r| probes.health(r.2)).collect();
    type Get<'x> = &'x dyn Fn(&NodeRt, &super::probe::Health) -> Option<f64>;
    let gauges: [(&Family, Get<'_>); 8] = [
        (&NODE_UP, &|_, h| Some(b(h.up))),
        (&NODE_ROUTABLE, &|n, h| Some(b(n.is_routable() && h.up))),
        (&NODE_MAINT, &|n, _| Some(b(n.in_maintenance()))),
        (&NODE_EJECTED, &|n, _| Some(b(n.is_ejected()))),
        (&NODE_EJECTIONS, &|n, _| Some(f64::from(n.ejections()))),
        (&NODE_CHECK, &|_, h| Some(h.check_us as f64 / 1e6)),
        (&NODE_CHECK_AGE, &|_, h| {
            (h.last_check_ms != 0).then(|| now_ms().saturating_sub(h.last_check_ms) as f64 / 1e3)
        }),
        (&NODE_LAG, &|n, _| Some(n.lag_ms() as f64 / 1e3)),
    ];
    for (f, get) in gauges {
        o.head(f);
        for ((p, s, n, _), h) in rows.iter().zip(&health) {
            if let Some(v) = get(n, h) {
                o.sample(f.name, &[("pool", p), ("shard", s), ("node", &n.label)], v);
            }
        }
    }
}

fn node_traffic(o: &mut Out, rows: &[NodeRow<'_>]) {
    let simple = [
        (&NODE_REQUESTS, ServerStat::Requests),
        (&NODE_RESPONSES, ServerStat::Responses),
        (&NODE_SENT, ServerStat::RequestBytes),
        (&NODE_RECEIVED, ServerStat::ResponseBytes),
        (&NODE_CONNS, ServerStat::ServerConnections),
    ];
    for (f, stat) in simple {
        o.head(f);
        for (p, s, n, _) in rows {
            let labels = [("pool", *p), ("shard", *s), ("node", n.label.as_str())];
            o.sample(f.name, &labels, n.sum(stat) as f64);
        }
    }
    let by_kind: [(&Family, &[(&str, ServerStat)]); 3] = [
        (
            &NODE_ERRORS,
            &[
                ("server_err", ServerStat::ServerErr),
                ("server_eof", ServerStat::ServerEof),
                ("server_timedout", ServerStat::ServerTimedout),
            ],
        ),
        (
            &NODE_QUEUED,
            &[
                ("unsent", ServerStat::InQueue),
                ("inflight", ServerStat::OutQueue),
            ],
        ),
        (
            &NODE_QUEUED_BYTES,
            &[
                ("unsent", ServerStat::InQueueBytes),
                ("inflight", ServerStat::OutQueueBytes),
            ],
        ),
    ];
    for (f, kinds) in by_kind {
        o.head(f);
        let label = if f.name == NODE_ERRORS.name {
            "kind"
        } else {
            "state"
        };
        for (p, s, n, _) in rows {
            for (k, stat) in kinds {
                let labels = [
                    ("pool", *p),
                    ("shard", *s),
                    ("node", n.label.as_str()),
                    (label, *k),
                ];
                o.sample(f.name, &labels, n.sum(*stat) as f64);
            }
        }
    }
}

fn events(o: &mut Out, counts: Tally) {
    let mut by_kind: Vec<(String, u64)> = Vec::new();
    for ((kind, _, _), v) in counts {
        match by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, t)) => *t += v,
            None => by_kind.push((kind, v)),
        }
    }
    by_kind.sort();
    o.head(&EVENTS);
    for (kind, v) in by_kind {
        o.sample(EVENTS.name, &[("kind", &kind)], v as f64);
    }
}

fn commands(o: &mut Out, shared: &Shared) {
    let cmds = shared.metrics.commands();
    o.head(&COMMAND_CALLS);
    for (name, calls, _, _) in &cmds {
        o.sample(COMMAND_CALLS.name, &[("command", name)], *calls as f64);
    }
    o.head(&COMMAND_DURATION);
    let bucket = format!("{}_bucket", COMMAND_DURATION.name);
    let sum = format!("{}_sum", COMMAND_DURATION.name);
    let count = format!("{}_count", COMMAND_DURATION.name);
    for (name, calls, sum_us, buckets) in &cmds {
        let mut cumulative = 0i64;
        for (i, n) in buckets.iter().enumerate() {
            cumulative += n;
            let le = match LATENCY_BUCKETS_US.get(i) {
                Some(&u) if u != u64::MAX => fmt_value(u as f64 / 1e6),
                _ => "+Inf".into(),
            };
            o.sample(
                &bucket,
                &[("command", name), ("le", &le)],
                cumulative as f64,
            );
        }
        o.sample(&sum, &[("command", name)], *sum_us as f64 / 1e6);
        o.sample(&count, &[("command", name)], *calls as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn shared() -> Shared {
        let yml = "a:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:2:1 s0\n   - 127.0.0.1:3:1 s1\n\
                   b:\n  listen: 127.0.0.1:4\n  primary: 127.0.0.1:5\n  replicas:\n    - 127.0.0.1:6\n";
        let conf = rampart_config::parse(yml, "test").expect("test config parses");
        let s = Shared::new(2, None, tokio_util::sync::CancellationToken::new());
        let pools = crate::control::reload::build_pools(&s, conf, &[]).expect("pools build");
        s.pools.store(Arc::new(pools));
        s
    }

    #[test]
    fn family_names_are_unique_and_conventional() {
        let mut seen = HashSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} declared twice", f.name);
            assert!(f.name.starts_with("rampart_"), "{}", f.name);
            assert!(["counter", "gauge", "histogram"].contains(&f.kind));
            assert_eq!(
                f.kind == "counter",
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
            assert!(!f.help.is_empty() && !f.help.contains('\n'));
        }
    }

    #[test]
    fn every_sample_follows_its_help_and_type_and_no_family_repeats() {
        let s = shared();
        let w = s.metrics.worker(0);
        let get = rampart_commands::all()
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case("get"))
            .expect("GET is in the table");
        let i = crate::observe::stats::command_index(Some(get));
        w.by_command[i].record(50);
        w.by_command[i].record(2_000);
        w.by_command[i].record(5_000_000);
        let text = render(&s, &Probes::default(), &EventTally::default());
        let mut helped = HashSet::new();
        let mut typed = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(helped.insert(name.to_string()), "HELP twice for {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap_or_default().to_string();
                assert!(helped.contains(&name), "TYPE before HELP for {name}");
                let kind = it.next().unwrap_or_default().to_string();
                assert!(
                    typed.insert(name.clone(), kind).is_none(),
                    "TYPE twice: {name}"
                );
            } else {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suf| {
                        let base = name.strip_suffix(suf)?;
                        (typed.get(base).map(String::as_str) == Some("histogram")).then_some(base)
                    })
                    .unwrap_or(name);
                assert!(typed.contains_key(family), "sample before TYPE: {line}");
                let value = line.rsplit(' ').next().unwrap_or_default();
                assert!(
                    value == "+Inf" || value.parse::<f64>().is_ok(),
                    "bad value: {line}"
                );
            }
        }
        assert!(text.contains("rampart_command_calls_total{command=\"get\"} 3"));
        // Cumulative buckets: 1 at 100 µs, 2 at 2.5 ms, 2 at 1 s, 3 at +Inf.
        assert!(text.contains("command=\"get\",le=\"0.0001\"} 1"), "{text}");
        assert!(text.contains("command=\"get\",le=\"0.0025\"} 2"));
        assert!(text.contains("command=\"get\",le=\"1\"} 2"));
        assert!(text.contains("command=\"get\",le=\"+Inf\"} 3"));
        assert!(text.contains("rampart_command_duration_seconds_count{command=\"get\"} 3"));
        assert!(text.contains("rampart_node_errors_total{pool=\"a\",shard=\"s0\",node=\"s0\",kind=\"server_timedout\"} 0"));
        assert!(
            text.contains(
                "rampart_node_role{pool=\"b\",shard=\"b\",node=\"127.0.0.1:5\",role=\"primary\""
            ),
            "{text}"
        );
    }

    #[test]
    fn the_tally_counts_each_event_once() {
        let t = EventTally::default();
        let ev = |ms, msg: &str| Event {
            at_ms: ms,
            kind: crate::observe::events::Kind::Failover,
            pool: "p".into(),
            shard: "s".into(),
            node: "n".into(),
            message: msg.into(),
        };
        let key = ("failover".to_string(), "p".to_string(), "s".to_string());
        let mut log = vec![ev(1, "a"), ev(2, "b")];
        assert_eq!(t.update(&log)[&key], 2);
        assert_eq!(t.update(&log)[&key], 2);
        log.remove(0);
        log.push(ev(3, "c"));
        assert_eq!(t.update(&log)[&key], 3);
    }
}
