//! Every statistic rampart keeps, declared once.
//!
//! The tables below name each pool and server statistic, say whether it is a counter or a gauge
//! and what it means; the twemproxy stats JSON and `INFO` are derived from them. Each worker
//! thread owns one [`WorkerStats`] and is its only writer, so an increment is a plain load and
//! store on a relaxed atomic (no locked instruction on the request path). Readers sum the workers.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

/// Whether a statistic only grows or goes up and down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic count since start.
    Counter,
    /// Current level.
    Gauge,
}

macro_rules! stat_table {
    ($(#[$m:meta])* $name:ident { $($var:ident => ($key:literal, $kind:ident, $desc:literal),)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum $name { $($var,)* }
        impl $name {
            /// Every statistic of this table, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var,)*];
            /// Number of statistics in this table.
            pub const COUNT: usize = Self::ALL.len();
            /// The twemproxy name of the statistic.
            pub fn key(self) -> &'static str { match self { $($name::$var => $key,)* } }
            /// Counter or gauge.
            pub fn kind(self) -> Kind { match self { $($name::$var => Kind::$kind,)* } }
            /// What the statistic means.
            pub fn describe(self) -> &'static str { match self { $($name::$var => $desc,)* } }
        }
    };
}

stat_table! {
    /// Per-pool statistics, with twemproxy's names.
    PoolStat {
        ClientEof => ("client_eof", Counter, "client closed its connection"),
        ClientErr => ("client_err", Counter, "client connection closed on an error"),
        ClientConnections => ("client_connections", Gauge, "open client connections"),
        ServerEjects => ("server_ejects", Counter, "times a server was ejected from the ring"),
        ForwardError => ("forward_error", Counter, "requests answered with an error because no server could take them"),
        Fragments => ("fragments", Counter, "sub-requests made by splitting multi-key requests"),
    }
}

stat_table! {
    /// Per-server statistics, with twemproxy's names.
    ServerStat {
        ServerEof => ("server_eof", Counter, "server closed the connection"),
        ServerErr => ("server_err", Counter, "connection to the server failed or broke"),
        ServerTimedout => ("server_timedout", Counter, "requests that hit the pool timeout"),
        ServerConnections => ("server_connections", Gauge, "open connections to the server"),
        Requests => ("requests", Counter, "requests sent to the server"),
        RequestBytes => ("request_bytes", Counter, "bytes of requests sent to the server"),
        Responses => ("responses", Counter, "replies received from the server"),
        ResponseBytes => ("response_bytes", Counter, "bytes of replies received from the server"),
        InQueue => ("in_queue", Gauge, "requests queued, not yet written to the server"),
        InQueueBytes => ("in_queue_bytes", Gauge, "bytes of requests queued, not yet written"),
        OutQueue => ("out_queue", Gauge, "requests written, waiting for their reply"),
        OutQueueBytes => ("out_queue_bytes", Gauge, "bytes of requests written, waiting for their reply"),
    }
}

/// One cell written by a single worker thread and read by anyone.
#[derive(Default, Debug)]
pub struct Cell(AtomicI64);

impl Cell {
    /// Add `n` (may be negative for gauges). Only the owning worker calls this.
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    /// Current value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// The statistics of one pool, as written by one worker. (Server statistics live with each
/// node, one row per worker: see `crate::topology::node::NodeRt::cells`.)
#[derive(Debug)]
pub struct PoolCells {
    pool: Vec<Cell>,
    /// Replies to the pool's clients: calls, error replies and latency, as per command.
    pub replies: CommandCells,
}

impl PoolCells {
    fn new() -> Self {
        PoolCells {
            pool: (0..PoolStat::COUNT).map(|_| Cell::default()).collect(),
            replies: CommandCells::default(),
        }
    }
    /// The cell of a pool statistic.
    #[inline]
    pub fn pool(&self, s: PoolStat) -> &Cell {
        &self.pool[s as usize]
    }
}

/// Most distinct pool names over the life of a process (statistics slots are never reused).
pub const MAX_POOLS: usize = 64;

/// Upper bounds (µs, inclusive) of the per-command latency histogram buckets; the last one is
/// +Inf. Latency is measured from the read that brought a request to the write of its reply.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    u64::MAX,
];

/// The bucket of [`LATENCY_BUCKETS_US`] a latency of `us` microseconds falls in.
#[inline]
pub fn bucket(us: u64) -> usize {
    LATENCY_BUCKETS_US
        .iter()
        .position(|&b| us <= b)
        .unwrap_or(LATENCY_BUCKETS_US.len() - 1)
}

/// Calls and latency of one command on one worker. The same cells count the replies of a
/// pool ([`PoolCells::replies`]) and of a node.
#[derive(Debug, Default)]
pub struct CommandCells {
    /// Requests answered.
    pub calls: Cell,
    /// Of those, answered with an error reply (RESP `-...`, or RESP3 `!...`).
    pub errors: Cell,
    /// Sum of their latencies, µs.
    pub sum_us: Cell,
    /// Count per bucket of [`LATENCY_BUCKETS_US`] (not cumulative).
    pub buckets: [Cell; LATENCY_BUCKETS_US.len()],
}

/// [`CommandCells`] summed over the workers: calls, error replies, latency sum (µs) and the
/// count per bucket of [`LATENCY_BUCKETS_US`] (not cumulative).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests answered.
    pub calls: i64,
    /// Of those, answered with an error.
    pub errors: i64,
    /// Sum of their latencies, µs.
    pub sum_us: i64,
    /// Per bucket of [`LATENCY_BUCKETS_US`].
    pub buckets: [i64; LATENCY_BUCKETS_US.len()],
}

impl Totals {
    /// The sum of `cells` (one per worker).
    pub fn of<'a>(cells: impl IntoIterator<Item = &'a CommandCells>) -> Self {
        let mut t = Totals::default();
        for c in cells {
            t.calls += c.calls.get();
            t.errors += c.errors.get();
            t.sum_us += c.sum_us.get();
            for (b, cell) in t.buckets.iter_mut().zip(&c.buckets) {
                *b += cell.get();
            }
        }
        t
    }
}

impl CommandCells {
    /// Count one request that took `us` microseconds.
    #[inline]
    pub fn record(&self, us: u64) {
        self.record_in(bucket(us), us);
    }
    /// Count one request that took `us` microseconds, whose bucket ([`bucket`]) is known.
    #[inline]
    pub fn record_in(&self, bucket: usize, us: u64) {
        self.calls.add(1);
        self.sum_us.add(us as i64);
        if let Some(b) = self.buckets.get(bucket) {
            b.add(1);
        }
    }
    /// Count one error reply (after [`CommandCells::record`] of the same request).
    #[inline]
    pub fn count_error(&self) {
        self.errors.add(1);
    }
}

/// Index of a command in the per-command tables: its position in the command table, or the
/// last slot for anything the table does not know (unknown commands, `RAMPART`).
pub fn command_index(cmd: Option<&rampart_commands::Command>) -> usize {
    let all = rampart_commands::all();
    let Some(c) = cmd else { return all.len() };
    // Top-level entries live in one static slice: an entry's offset in it is its index.
    let size = std::mem::size_of::<rampart_commands::Command>().max(1);
    let i =
        (c as *const rampart_commands::Command as usize).wrapping_sub(all.as_ptr() as usize) / size;
    if i < all.len() && std::ptr::eq(&all[i], c) {
        i
    } else {
        all.len()
    }
}

/// The name of a command-table slot (see [`command_index`]).
pub fn command_name(index: usize) -> &'static str {
    rampart_commands::all()
        .get(index)
        .map(|c| c.name)
        .unwrap_or("other")
}

/// Everything one worker counts.
#[derive(Debug)]
pub struct WorkerStats {
    /// Per pool, in config order.
    pub pools: Vec<PoolCells>,
    /// Client connections accepted by this worker.
    pub total_connections: Cell,
    /// Client connections open on this worker.
    pub curr_connections: Cell,
    /// Requests answered by this worker (all pools, including local replies).
    pub commands: Cell,
    /// Per command (see [`command_index`]).
    pub by_command: Vec<CommandCells>,
}

/// The statistics of the whole process: one [`WorkerStats`] per worker.
#[derive(Debug)]
pub struct Metrics {
    workers: Vec<Arc<WorkerStats>>,
}

impl Metrics {
    /// Cells for `workers` workers over `pools` pools.
    pub fn new(workers: usize, pools: usize) -> Self {
        let make = || {
            Arc::new(WorkerStats {
                pools: (0..pools).map(|_| PoolCells::new()).collect(),
                total_connections: Cell::default(),
                curr_connections: Cell::default(),
                commands: Cell::default(),
                by_command: (0..=rampart_commands::all().len())
                    .map(|_| CommandCells::default())
                    .collect(),
            })
        };
        Metrics {
            workers: (0..workers).map(|_| make()).collect(),
        }
    }
    /// The cells of worker `i`.
    pub fn worker(&self, i: usize) -> Arc<WorkerStats> {
        Arc::clone(&self.workers[i])
    }
    /// Sum of a pool statistic over all workers.
    pub fn pool_sum(&self, pool: usize, s: PoolStat) -> i64 {
        self.workers
            .iter()
            .map(|w| w.pools[pool].pool(s).get())
            .sum()
    }
    /// Per command with at least one call: its name and its [`Totals`] (calls, error
    /// replies, latency sum in µs, bucket counts not cumulative), summed over the workers.
    pub fn commands(&self) -> Vec<(&'static str, Totals)> {
        let n = rampart_commands::all().len() + 1;
        (0..n)
            .filter_map(|i| {
                let t = Totals::of(self.workers.iter().map(|w| &w.by_command[i]));
                (t.calls > 0).then(|| (command_name(i), t))
            })
            .collect()
    }

    /// Replies of pool slot `pool` summed over the workers.
    pub fn pool_replies(&self, pool: usize) -> Totals {
        Totals::of(self.workers.iter().map(|w| &w.pools[pool].replies))
    }

    /// [`Totals`] of every command slot (see [`command_index`]), summed over the workers;
    /// index = slot.
    pub fn command_totals(&self) -> Vec<Totals> {
        (0..=rampart_commands::all().len())
            .map(|i| Totals::of(self.workers.iter().map(|w| &w.by_command[i])))
            .collect()
    }

    /// Sum of a process-wide statistic chosen by `f`.
    pub fn global_sum(&self, f: impl Fn(&WorkerStats) -> &Cell) -> i64 {
        self.workers.iter().map(|w| f(w).get()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_twemproxy() {
        let mut names: Vec<&str> = PoolStat::ALL.iter().map(|s| s.key()).collect();
        names.extend(ServerStat::ALL.iter().map(|s| s.key()));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a statistic name is declared twice");
        assert!(names.contains(&"server_timedout"));
        assert!(names.contains(&"forward_error"));
    }

    #[test]
    fn sums_cover_every_worker() {
        let m = Metrics::new(3, 2);
        for i in 0..3 {
            m.worker(i).pools[1]
                .pool(PoolStat::Fragments)
                .add(i as i64 + 1);
        }
        m.worker(0).pools[0]
            .pool(PoolStat::ClientConnections)
            .add(2);
        m.worker(2).pools[0]
            .pool(PoolStat::ClientConnections)
            .add(-1);
        assert_eq!(m.pool_sum(1, PoolStat::Fragments), 6);
        assert_eq!(m.pool_sum(0, PoolStat::Fragments), 0);
        assert_eq!(m.pool_sum(0, PoolStat::ClientConnections), 1);
    }
}
