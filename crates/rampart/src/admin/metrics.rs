//! `GET /metrics`: the Prometheus text exposition, written by hand from the same counters as
//! the twemproxy stats JSON.
//!
//! Every metric family is declared once in [`FAMILIES`] with its type and help text; the
//! renderer writes a family's `# HELP` and `# TYPE` lines before its first sample and a unit
//! test checks that no name repeats. Node series carry `pool`, `shard` and `node` labels; the
//! node's role is a separate info-style gauge (`rampart_node_role{role=...} 1`) so a switchover
//! does not start new series for every counter of the node (join on the three labels to
//! break counters down by role).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use crate::observe::stats::{PoolStat, ServerStat, LATENCY_BUCKETS_US};
use crate::topology::snapshot::{NodeSnap, ShardSnap, Snapshot, SpoolSnap};
use crate::topology::Shared;

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
    ADMIN_AUTH_FAILURES = ("rampart_admin_auth_failures_total", "counter", "Changing admin calls refused because they lacked the admin token or carried a wrong one.");
    ADMIN_TOKEN_RELOAD_FAILURES = ("rampart_admin_token_reload_failures_total", "counter", "Reloads that could not read a usable token from the admin token file; the previous token stayed.");
    AUTH_FAILURES = ("rampart_auth_failures_total", "counter", "AUTH (and HELLO ... AUTH) commands refused, all pools; each is also logged with the user name and the client's address.");
    AUTH_DELAYED = ("rampart_auth_delayed_total", "counter", "AUTH commands held back by the failed-AUTH back-off of their client's address.");
    AUTH_EVICTED = ("rampart_auth_backoff_evicted_total", "counter", "Addresses dropped from the failed-AUTH back-off table because it was full (10,000 addresses).");
    HELD_WRITES = ("rampart_held_writes_total", "counter", "Writes that waited in a failover hold because their shard had no primary.");
    HELD_RELEASED = ("rampart_held_writes_released_total", "counter", "Held writes sent to a primary once there was one.");
    HELD_FAILED = ("rampart_held_writes_failed_total", "counter", "Held writes answered with an error (failover_hold or its byte bound passed, or the shard was down).");
    HELD_NOW = ("rampart_held_writes", "gauge", "Writes waiting in a failover hold now.");
    HOLD_SECONDS = ("rampart_held_write_seconds_total", "counter", "Total time released writes spent held.");
    ACK_WAITS = ("rampart_replica_ack_waits_total", "counter", "WAITs sent after a batch of writes (min_replica_acks).");
    ACK_CONFIRMED = ("rampart_replica_acked_writes_total", "counter", "Writes released once min_replica_acks replicas acknowledged them.");
    ACK_SHORT = ("rampart_replica_ack_failed_writes_total", "counter", "Writes applied on the primary but answered with an error because fewer than min_replica_acks replicas acknowledged them in time (or WAIT failed).");
    SPOOL_ENTRIES = ("rampart_spool_entries", "gauge", "Writes waiting in the shard's spool for replay (being appended, on disk, or being replayed).");
    SPOOL_BYTES = ("rampart_spool_bytes", "gauge", "Bytes of the writes waiting in the shard's spool.");
    SPOOL_AGE = ("rampart_spool_oldest_age_seconds", "gauge", "Age of the oldest write waiting in the shard's spool (absent when none waits).");
    SPOOL_APPENDED = ("rampart_spool_appended_total", "counter", "Writes made durable in the shard's spool (acknowledged to clients).");
    SPOOL_REPLAYED = ("rampart_spool_replayed_total", "counter", "Spooled writes replayed and acknowledged by the shard's primary.");
    SPOOL_REPLAY_ERRORS = ("rampart_spool_replay_errors_total", "counter", "Spooled writes the primary answered with an error at replay (they left the spool; logged).");
    SPOOL_REFUSED = ("rampart_spool_refused_total", "counter", "Writes the spool refused (full or stopped); their clients got an error.");
    SPOOL_STOPPED = ("rampart_spool_stopped", "gauge", "1 when the shard's spool stopped for good after an I/O error (writes then fail).");
    POOL_CLIENTS = ("rampart_pool_client_connections", "gauge", "Client connections open on the pool.");
    POOL_CLIENT_EOF = ("rampart_pool_client_eof_total", "counter", "Client connections the client closed.");
    POOL_CLIENT_ERR = ("rampart_pool_client_errors_total", "counter", "Client connections closed on an error.");
    POOL_FORWARD_ERR = ("rampart_pool_forward_errors_total", "counter", "Requests answered with an error because no server could take them.");
    POOL_CLOSED_DOWN = ("rampart_pool_clients_closed_when_down_total", "counter", "Client connections closed because a request met a shard that was down (when_down: close); also counted in rampart_pool_client_errors_total.");
    POOL_FRAGMENTS = ("rampart_pool_fragments_total", "counter", "Sub-requests made by splitting multi-key requests.");
    POOL_SERVER_EJECTS = ("rampart_pool_server_ejects_total", "counter", "Times a server was ejected from the ring (twemproxy auto_eject_hosts).");
    POOL_READY = ("rampart_pool_ready", "gauge", "1 when the pool is ready as /readyz judges it (a cache pool: some shard serves; any other: every shard takes writes).");
    CLUSTER_MAPS_ADOPTED = ("rampart_cluster_maps_adopted_total", "counter", "Slot maps of the cluster pool's Redis Cluster read, agreed and adopted (since the pool's last reload).");
    CLUSTER_MAPS_REFUSED = ("rampart_cluster_maps_refused_total", "counter", "Slot maps of the cluster pool's Redis Cluster not adopted: no two nodes agreed, a slot with two owners, or an owner's config epoch going back (since the pool's last reload).");
    CLUSTER_SLOTS_UNCOVERED = ("rampart_cluster_slots_uncovered", "gauge", "Slots of the cluster pool that no primary serves in the adopted map (their requests get the no-server error).");
    SHARD_WRITABLE = ("rampart_shard_writable", "gauge", "1 when the shard takes writes now: on the ring, with a primary that is up, says role:master and is not drained.");
    SHARD_EJECTED = ("rampart_shard_ejected", "gauge", "1 while the shard is off the ring (twemproxy auto_eject_hosts).");
    SHARD_SWITCHING = ("rampart_shard_switchover_running", "gauge", "1 while a planned switchover holds the shard's writes.");
    SHARD_FAILOVERS = ("rampart_shard_failovers_total", "counter", "Primary changes of the shard made by Sentinel, by the cluster, or followed from the nodes' own roles in a pool without Sentinel (the first primary named is not one).");
    SHARD_SWITCHOVERS = ("rampart_shard_switchovers_total", "counter", "Planned switchovers of the shard that completed.");
    PUBSUB_RESUBSCRIPTIONS = ("rampart_pubsub_resubscriptions_total", "counter", "Worker subscriber connections of the shard opened again after a break or a switch of node, which subscribed every channel and pattern they held again.");
    SHARD_CIRCUIT = ("rampart_shard_circuit_open", "gauge", "1 while the shard's circuit is open (a cache pool with fail_open): its requests are answered without it until a health check gets a reply.");
    FAIL_OPEN_MISSES = ("rampart_fail_open_misses_total", "counter", "Reads of the shard answered as a miss because it could not answer (circuit open, or no reply within fail_open_timeout).");
    FAIL_OPEN_DROPS = ("rampart_fail_open_drops_total", "counter", "Writes to the shard answered as if they had succeeded (fail_open_writes: drop) because it could not answer.");
    NODE_ROLE = ("rampart_node_role", "gauge", "Always 1; role is the node's role in the shard view (primary or replica), seen is what its last ROLE reply said, status is its state in one word (up, down, ejected, maintenance, out).");
    NODE_UP = ("rampart_node_up", "gauge", "1 when the node passes its health checks (twemproxy pools: its last connection or request on live traffic did not fail) and Sentinel does not list it down.");
    NODE_ROUTABLE = ("rampart_node_routable", "gauge", "1 when the node may receive new requests (up, not ejected, not in maintenance).");
    NODE_REPLICA_USABLE = ("rampart_node_replica_usable", "gauge", "1 when the node is a replica in the read rotation (no sync, and link up with lag within max_replica_lag, or link down for at most max_stale).");
    NODE_STALE = ("rampart_node_stale", "gauge", "1 while the node is a replica serving reads with its replication link down (within max_stale): its reads may miss its primary's latest writes.");
    NODE_LINK_DOWN = ("rampart_node_replication_link_down_seconds", "gauge", "Seconds the replica's replication link had been down at its last check (absent while the link is up).");
    READS_STALE = ("rampart_reads_stale_total", "counter", "Reads sent to a replica while it served stale (its replication link down, within max_stale).");
    NODE_MAINT = ("rampart_node_maintenance", "gauge", "1 while the node is drained for maintenance.");
    NODE_EJECTED = ("rampart_node_ejected", "gauge", "1 while passive failures keep the node out of rotation.");
    NODE_EJECTIONS = ("rampart_node_ejections_total", "counter", "Times passive failures on live traffic ejected the node.");
    NODE_CHECK = ("rampart_node_health_check_duration_seconds", "gauge", "Round trip of the node's last health check.");
    NODE_CHECK_AGE = ("rampart_node_last_check_age_seconds", "gauge", "Seconds since the node's state was last observed: its last health check, or (twemproxy pools) its last failure on live traffic; absent before the first.");
    NODE_LAG = ("rampart_node_replication_lag_seconds", "gauge", "Replication lag of a replica at its last check: time since its primary was seen past the replica's offset (absent while not measured).");
    NODE_LAG_BYTES = ("rampart_node_replication_lag_bytes", "gauge", "Bytes of replication stream the replica lacked at its last check, against the offset its primary was last seen with (absent while not measured).");
    NODE_REQUESTS = ("rampart_node_requests_total", "counter", "Requests sent to the node.");
    NODE_RESPONSES = ("rampart_node_responses_total", "counter", "Replies received from the node.");
    NODE_ERRORS = ("rampart_node_errors_total", "counter", "Connection failures by kind: server_err (connect failed or broke), server_eof (server closed), server_timedout (request deadline passed).");
    NODE_SENT = ("rampart_node_sent_bytes_total", "counter", "Request bytes sent to the node.");
    NODE_RECEIVED = ("rampart_node_received_bytes_total", "counter", "Reply bytes received from the node.");
    NODE_CONNS = ("rampart_node_server_connections", "gauge", "Open connections to the node, all workers.");
    NODE_QUEUED = ("rampart_node_queued_requests", "gauge", "Requests waiting at the node: state=unsent (queued) or state=inflight (written, no reply yet).");
    NODE_QUEUED_BYTES = ("rampart_node_queued_bytes", "gauge", "Bytes of requests waiting at the node, by state as rampart_node_queued_requests.");
    FAULTS_ACTIVE = ("rampart_faults_active", "gauge", "Faults injected through the admin API that are active now, by kind (each ends by itself).");
    FAULT_HITS = ("rampart_fault_hits_total", "counter", "Requests an active injected fault applied to, by fault id, kind and pool.");
    EVENTS = ("rampart_events_total", "counter", "Operator events recorded since the start (node up/down/ejected, maintenance, failover, switchover, reload, primary, circuit open/closed), by kind.");
    TLS_NOT_AFTER = ("rampart_tls_certificate_not_after_seconds", "gauge", "When a loaded certificate expires (its notAfter, seconds since the Unix epoch), by pool, role (listener, client_ca, backend_ca, backend_client; admin, with an empty pool, for the admin listener's) and file; for a CA file, the certificate in it that expires first.");
    TLS_ACCEPTED = ("rampart_tls_client_handshakes_total", "counter", "TLS handshakes of clients on the pool's tls_listen that completed.");
    TLS_REFUSED = ("rampart_tls_client_handshake_failures_total", "counter", "TLS handshakes of clients on the pool's tls_listen that were refused or broke (no or an untrusted client certificate, no shared version, a timeout); each is logged with the peer and the reason.");
    TLS_BACKEND_FAILED = ("rampart_tls_server_handshake_failures_total", "counter", "TLS handshakes with the pool's servers and Sentinels that failed (an untrusted or misnamed server certificate, a refused client certificate).");
    BACKEND_AUTH_FAILURES = ("rampart_backend_auth_failures_total", "counter", "Credentials of rampart's own connections refused by a node or a Sentinel (AUTH answered WRONGPASS or NOAUTH, or a backend_tls handshake failed), by pool, peer (node or sentinel) and addr; logged once when refusals start, then at most once a minute, and once when they stop. A series appears with the first refusal.");
    COMMAND_CALLS = ("rampart_command_calls_total", "counter", "Requests answered, by command.");
    COMMAND_ERRORS = ("rampart_command_errors_total", "counter", "Requests answered with an error reply, by command.");
    COMMAND_DURATION = ("rampart_command_duration_seconds", "histogram", "Time from reading a request to writing its reply, by command.");
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

/// Render the whole exposition.
pub fn render(shared: &Shared) -> String {
    let mut o = Out {
        text: String::with_capacity(16 * 1024),
    };
    let snap = Snapshot::of(&super::pools(shared));
    process(&mut o, shared);
    pools(&mut o, shared, &snap);
    clusters(&mut o, &snap);
    shards(&mut o, &snap);
    spools(&mut o, &snap);
    node_health(&mut o, &snap);
    node_traffic(&mut o, &snap);
    tls(&mut o, &snap);
    refused(&mut o);
    events(&mut o);
    faults(&mut o);
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
        (&ADMIN_AUTH_FAILURES, super::token::stats().0 as i64),
        (&ADMIN_TOKEN_RELOAD_FAILURES, super::token::stats().1 as i64),
        (&AUTH_FAILURES, crate::session::backoff::failures() as i64),
        (&AUTH_DELAYED, crate::session::backoff::delayed() as i64),
        (&AUTH_EVICTED, crate::session::backoff::evicted() as i64),
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
    let (waits, confirmed, short) = crate::upstream::acks::stats();
    for (f, v) in [
        (&ACK_WAITS, waits),
        (&ACK_CONFIRMED, confirmed),
        (&ACK_SHORT, short),
    ] {
        o.head(f);
        o.sample(f.name, &[], v as f64);
    }
}

fn pools(o: &mut Out, shared: &Shared, snap: &Snapshot) {
    for (f, stat) in [
        (&POOL_CLIENTS, PoolStat::ClientConnections),
        (&POOL_CLIENT_EOF, PoolStat::ClientEof),
        (&POOL_CLIENT_ERR, PoolStat::ClientErr),
        (&POOL_FORWARD_ERR, PoolStat::ForwardError),
        (&POOL_FRAGMENTS, PoolStat::Fragments),
        (&POOL_SERVER_EJECTS, PoolStat::ServerEjects),
    ] {
        o.head(f);
        for p in &snap.pools {
            let v = shared.metrics.pool_sum(p.pool.index, stat);
            o.sample(f.name, &[("pool", p.name())], v as f64);
        }
    }
    o.head(&POOL_CLOSED_DOWN);
    for p in &snap.pools {
        let v = crate::upstream::sink::closed_when_down(p.pool.index);
        o.sample(POOL_CLOSED_DOWN.name, &[("pool", p.name())], v as f64);
    }
    o.head(&POOL_READY);
    for p in &snap.pools {
        o.sample(POOL_READY.name, &[("pool", p.name())], b(p.ready));
    }
}

/// The slot map of each cluster pool: maps adopted and refused, slots uncovered.
fn clusters(o: &mut Out, snap: &Snapshot) {
    let rows: Vec<(&str, u64, u64, usize)> = snap
        .pools
        .iter()
        .filter_map(|p| {
            let c = p.pool.cluster.as_ref()?;
            let (adopted, refused) = c.counts();
            let table = c.table();
            let uncovered = (0..crate::topology::cluster::SLOTS as u16)
                .filter(|&s| table.shard(s).is_none())
                .count();
            Some((p.name(), adopted, refused, uncovered))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    for (f, pick) in [
        (&CLUSTER_MAPS_ADOPTED, 0),
        (&CLUSTER_MAPS_REFUSED, 1),
        (&CLUSTER_SLOTS_UNCOVERED, 2),
    ] {
        o.head(f);
        for &(pool, adopted, refused, uncovered) in &rows {
            let v = [adopted as f64, refused as f64, uncovered as f64][pick];
            o.sample(f.name, &[("pool", pool)], v);
        }
    }
}

/// Certificate expiry and handshake counts of the pools that use TLS.
fn tls(o: &mut Out, snap: &Snapshot) {
    let with_tls = || {
        snap.pools
            .iter()
            .filter(|p| p.pool.tls.server.is_some() || p.pool.tls.client.is_some())
    };
    o.head(&TLS_NOT_AFTER);
    if let Some(c) = super::tls::cert_info() {
        let labels = [("pool", ""), ("role", c.role), ("file", &c.file)];
        o.sample(TLS_NOT_AFTER.name, &labels, c.not_after as f64);
    }
    for p in with_tls() {
        for c in &p.pool.tls.certs {
            let labels = [("pool", p.name()), ("role", c.role), ("file", &c.file)];
            o.sample(TLS_NOT_AFTER.name, &labels, c.not_after as f64);
        }
    }
    for (f, pick) in [
        (&TLS_ACCEPTED, 0),
        (&TLS_REFUSED, 1),
        (&TLS_BACKEND_FAILED, 2),
    ] {
        o.head(f);
        for p in with_tls() {
            let (accepted, refused, failed) = crate::tls::counts(p.pool.index);
            let v = [accepted, refused, failed][pick];
            o.sample(f.name, &[("pool", p.name())], v as f64);
        }
    }
}

fn shards(o: &mut Out, snap: &Snapshot) {
    type Get<'x> = &'x dyn Fn(&ShardSnap) -> f64;
    let gauges: [(&Family, Get<'_>); 9] = [
        (&SHARD_WRITABLE, &|s| b(s.writable)),
        (&SHARD_EJECTED, &|s| b(s.ejected)),
        (&SHARD_SWITCHING, &|s| b(s.switching)),
        (&SHARD_FAILOVERS, &|s| s.failovers as f64),
        (&SHARD_SWITCHOVERS, &|s| s.switchovers as f64),
        (&PUBSUB_RESUBSCRIPTIONS, &|s| s.resubscriptions as f64),
        (&SHARD_CIRCUIT, &|s| b(s.circuit_open)),
        (&FAIL_OPEN_MISSES, &|s| s.fail_open_misses as f64),
        (&FAIL_OPEN_DROPS, &|s| s.fail_open_drops as f64),
    ];
    for (f, get) in gauges {
        o.head(f);
        for p in &snap.pools {
            for s in &p.shards {
                o.sample(f.name, &[("pool", p.name()), ("shard", &s.name)], get(s));
            }
        }
    }
}

/// The write spools: one sample per spooled shard.
fn spools(o: &mut Out, snap: &Snapshot) {
    type Get<'x> = &'x dyn Fn(&SpoolSnap) -> Option<f64>;
    let families: [(&Family, Get<'_>); 8] = [
        (&SPOOL_ENTRIES, &|s| Some(s.entries as f64)),
        (&SPOOL_BYTES, &|s| Some(s.bytes as f64)),
        (&SPOOL_AGE, &|s| s.oldest_age_ms.map(|ms| ms as f64 / 1e3)),
        (&SPOOL_APPENDED, &|s| Some(s.appended as f64)),
        (&SPOOL_REPLAYED, &|s| Some(s.replayed as f64)),
        (&SPOOL_REPLAY_ERRORS, &|s| Some(s.replay_errors as f64)),
        (&SPOOL_REFUSED, &|s| Some(s.refused as f64)),
        (&SPOOL_STOPPED, &|s| Some(b(s.stopped.is_some()))),
    ];
    for (f, get) in families {
        o.head(f);
        for p in &snap.pools {
            for s in &p.shards {
                if let Some(v) = s.spool.as_ref().and_then(get) {
                    o.sample(f.name, &[("pool", p.name()), ("shard", &s.name)], v);
                }
            }
        }
    }
}

fn node_health(o: &mut Out, snap: &Snapshot) {
    o.head(&NODE_ROLE);
    for (p, s, n) in snap.nodes() {
        let labels = [
            ("pool", p.name()),
            ("shard", s.name.as_str()),
            ("node", n.addr.as_str()),
            ("role", n.role),
            ("seen", n.seen_role),
            ("status", n.status.name()),
        ];
        o.sample(NODE_ROLE.name, &labels, 1.0);
    }
    type Get<'x> = &'x dyn Fn(&NodeSnap) -> Option<f64>;
    let gauges: [(&Family, Get<'_>); 13] = [
        (&NODE_UP, &|n| Some(b(n.up))),
        (&NODE_ROUTABLE, &|n| Some(b(n.routable))),
        (&NODE_REPLICA_USABLE, &|n| Some(b(n.replica_usable))),
        (&NODE_STALE, &|n| Some(b(n.stale))),
        (&NODE_LINK_DOWN, &|n| n.node.link_down_s().map(|s| s as f64)),
        (&READS_STALE, &|n| Some(n.stale_reads as f64)),
        (&NODE_MAINT, &|n| Some(b(n.maintenance))),
        (&NODE_EJECTED, &|n| Some(b(n.ejected))),
        (&NODE_EJECTIONS, &|n| Some(f64::from(n.ejections))),
        (&NODE_CHECK, &|n| Some(n.check_us as f64 / 1e6)),
        (&NODE_CHECK_AGE, &|n| {
            n.last_check_age_ms.map(|ms| ms as f64 / 1e3)
        }),
        (&NODE_LAG, &|n| n.lag_ms.map(|ms| ms as f64 / 1e3)),
        (&NODE_LAG_BYTES, &|n| n.lag_bytes.map(|v| v as f64)),
    ];
    for (f, get) in gauges {
        o.head(f);
        for (p, s, n) in snap.nodes() {
            if let Some(v) = get(n) {
                let labels = [("pool", p.name()), ("shard", &s.name), ("node", &n.addr)];
                o.sample(f.name, &labels, v);
            }
        }
    }
}

fn node_traffic(o: &mut Out, snap: &Snapshot) {
    let simple = [
        (&NODE_REQUESTS, ServerStat::Requests),
        (&NODE_RESPONSES, ServerStat::Responses),
        (&NODE_SENT, ServerStat::RequestBytes),
        (&NODE_RECEIVED, ServerStat::ResponseBytes),
        (&NODE_CONNS, ServerStat::ServerConnections),
    ];
    for (f, stat) in simple {
        o.head(f);
        for (p, s, n) in snap.nodes() {
            let labels = [("pool", p.name()), ("shard", &s.name), ("node", &n.addr)];
            o.sample(f.name, &labels, n.node.sum(stat) as f64);
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
        for (p, s, n) in snap.nodes() {
            for (k, stat) in kinds {
                let labels = [
                    ("pool", p.name()),
                    ("shard", s.name.as_str()),
                    ("node", n.addr.as_str()),
                    (label, *k),
                ];
                o.sample(f.name, &labels, n.node.sum(*stat) as f64);
            }
        }
    }
}

fn refused(o: &mut Out) {
    o.head(&BACKEND_AUTH_FAILURES);
    for (pool, peer, addr, n) in crate::observe::refused::totals() {
        let labels = [
            ("pool", pool.as_str()),
            ("peer", peer.as_str()),
            ("addr", &addr),
        ];
        o.sample(BACKEND_AUTH_FAILURES.name, &labels, n as f64);
    }
}

fn events(o: &mut Out) {
    o.head(&EVENTS);
    for (kind, v) in crate::observe::events::totals() {
        o.sample(EVENTS.name, &[("kind", kind.name())], v as f64);
    }
}

fn faults(o: &mut Out) {
    use crate::upstream::fault;
    let active = fault::active();
    o.head(&FAULTS_ACTIVE);
    for kind in ["delay", "error", "blackhole", "reset"] {
        let n = active.iter().filter(|f| f.spec.kind.name() == kind).count();
        o.sample(FAULTS_ACTIVE.name, &[("kind", kind)], n as f64);
    }
    o.head(&FAULT_HITS);
    for f in &active {
        let id = f.id.to_string();
        let labels = [
            ("id", id.as_str()),
            ("kind", f.spec.kind.name()),
            ("pool", f.spec.pool.as_str()),
        ];
        o.sample(FAULT_HITS.name, &labels, f.hits() as f64);
    }
}

fn commands(o: &mut Out, shared: &Shared) {
    let cmds = shared.metrics.commands();
    o.head(&COMMAND_CALLS);
    for (name, t) in &cmds {
        o.sample(COMMAND_CALLS.name, &[("command", name)], t.calls as f64);
    }
    o.head(&COMMAND_ERRORS);
    for (name, t) in &cmds {
        o.sample(COMMAND_ERRORS.name, &[("command", name)], t.errors as f64);
    }
    o.head(&COMMAND_DURATION);
    let bucket = format!("{}_bucket", COMMAND_DURATION.name);
    let sum = format!("{}_sum", COMMAND_DURATION.name);
    let count = format!("{}_count", COMMAND_DURATION.name);
    for (name, t) in &cmds {
        let mut cumulative = 0i64;
        for (i, n) in t.buckets.iter().enumerate() {
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
        o.sample(&sum, &[("command", name)], t.sum_us as f64 / 1e6);
        o.sample(&count, &[("command", name)], t.calls as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
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
        let text = render(&s);
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
        assert!(text.contains("rampart_node_errors_total{pool=\"a\",shard=\"s0\",node=\"127.0.0.1:2\",kind=\"server_timedout\"} 0"));
        assert!(
            text.contains(
                "rampart_node_role{pool=\"b\",shard=\"b\",node=\"127.0.0.1:5\",role=\"primary\""
            ),
            "{text}"
        );
    }
}
