//! The last 15 minutes of each pool and node, kept by the server for the stats page
//! (`GET /api/history`).
//!
//! A task on the control runtime reads the reply counters of every pool and node once a second
//! ([`SAMPLE_EVERY`]) and keeps, per series, one point per sample: replies per second, error
//! replies per second, and the 99th percentile of latency. Rates are differences of the
//! counters divided by the time between two samples as measured here, so they do not depend
//! on when or how often a browser asks. Each series holds at most [`POINTS`] points (a ring),
//! and at most [`MAX_SERIES`] series are kept, so the history never holds more than about
//! 3 MiB; the answer says how much it holds now (`memory_bytes`).
//!
//! Per-command rows (calls, errors, rates and percentiles over the last [`COMMAND_WINDOW`]
//! samples) come from the same task.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::AdminState;
use crate::observe::stats::{command_name, Totals, LATENCY_BUCKETS_US};
use crate::topology::Shared;

/// Time between two samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Points kept per series: 15 minutes of samples.
pub const POINTS: usize = 900;
/// Most series (pools and nodes together) kept; more are not recorded, and the answer counts
/// them in `series_dropped`.
pub const MAX_SERIES: usize = 256;
/// Samples the per-command rows cover (10 s).
pub const COMMAND_WINDOW: usize = 10;
/// What a percentile in the last latency bucket (above 1 s, no upper bound) reads as: one
/// microsecond more than the last bound.
pub const OVER_LAST_BOUND_US: u32 = 1_000_001;

/// One sample of one series. `NaN` rates: no data for that second (the series did not exist,
/// or its counters went back, as when a node is replaced).
#[derive(Clone, Copy, Debug)]
struct Point {
    ops: f32,
    errors: f32,
    /// µs; 0 when there were no replies.
    p99_us: u32,
}

const MISSING: Point = Point {
    ops: f32::NAN,
    errors: f32::NAN,
    p99_us: 0,
};

/// What a series is about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Pool(String),
    Node {
        pool: String,
        shard: String,
        node: String,
        addr: String,
    },
}

struct Series {
    key: Key,
    points: VecDeque<Point>,
    /// Counters at the last sample.
    prev: Option<Totals>,
    /// Samples since this series was last seen.
    absent: usize,
}

#[derive(Default)]
struct Inner {
    /// Unix time (ms) of each point, oldest first; every series has one point per entry.
    times: VecDeque<u64>,
    last: Option<Instant>,
    series: Vec<Series>,
    dropped: usize,
    /// Per-command counters of the last `COMMAND_WINDOW + 1` samples, only commands with calls.
    commands: VecDeque<(Instant, Vec<(u16, Totals)>)>,
}

/// The kept history. Shared by the sampling task (writer) and the HTTP handler (reader).
#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

/// Upper bound (µs) of the bucket that holds quantile `q` of the counts in `buckets` (per
/// bucket of [`LATENCY_BUCKETS_US`], not cumulative); [`OVER_LAST_BOUND_US`] in the last
/// bucket; `None` when there are no counts.
fn percentile(buckets: &[i64], q: f64) -> Option<u32> {
    let total: i64 = buckets.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (i, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(match LATENCY_BUCKETS_US.get(i) {
                Some(&b) if b != u64::MAX => b.min(u64::from(u32::MAX)) as u32,
                _ => OVER_LAST_BOUND_US,
            });
        }
    }
    Some(OVER_LAST_BOUND_US)
}

/// `now - before`, or `None` when any counter went back.
fn delta(now: &Totals, before: &Totals) -> Option<Totals> {
    let mut d = Totals {
        calls: now.calls - before.calls,
        errors: now.errors - before.errors,
        sum_us: now.sum_us - before.sum_us,
        buckets: now.buckets,
    };
    for (b, p) in d.buckets.iter_mut().zip(&before.buckets) {
        *b -= p;
        if *b < 0 {
            return None;
        }
    }
    (d.calls >= 0 && d.errors >= 0).then_some(d)
}

fn point(d: &Totals, secs: f64) -> Point {
    Point {
        ops: (d.calls as f64 / secs) as f32,
        errors: (d.errors as f64 / secs) as f32,
        p99_us: percentile(&d.buckets, 0.99).unwrap_or(0),
    }
}

impl Inner {
    /// Record one sample taken at `at` (`unix_ms` on the wall clock) with the counters of
    /// every series that exists now.
    fn push(&mut self, at: Instant, unix_ms: u64, seen: Vec<(Key, Totals)>) {
        let secs = self
            .last
            .map(|l| at.saturating_duration_since(l).as_secs_f64())
            .filter(|s| *s > 0.0);
        self.last = Some(at);
        let Some(secs) = secs else {
            // The first sample only sets where the counters start.
            for (key, t) in seen {
                if let Some(s) = self.find_or_add(key, 0) {
                    s.prev = Some(t);
                }
            }
            return;
        };
        self.times.push_back(unix_ms);
        let len = self.times.len();
        for s in &mut self.series {
            s.absent += 1;
        }
        for (key, t) in seen {
            let Some(s) = self.find_or_add(key, len - 1) else {
                continue;
            };
            let p = s
                .prev
                .as_ref()
                .and_then(|prev| delta(&t, prev))
                .map_or(MISSING, |d| point(&d, secs));
            s.prev = Some(t);
            s.absent = 0;
            s.points.push_back(p);
        }
        for s in &mut self.series {
            while s.points.len() < len {
                s.points.push_back(MISSING);
            }
        }
        if self.times.len() > POINTS {
            self.times.pop_front();
            for s in &mut self.series {
                s.points.pop_front();
            }
        }
        // A series gone for the whole window has nothing left to show.
        self.series.retain(|s| s.absent < POINTS);
    }

    /// The series of `key`; a new one starts with `missing` points without data.
    fn find_or_add(&mut self, key: Key, missing: usize) -> Option<&mut Series> {
        if let Some(i) = self.series.iter().position(|s| s.key == key) {
            return self.series.get_mut(i);
        }
        if self.series.len() >= MAX_SERIES {
            self.dropped += 1;
            return None;
        }
        let mut points = VecDeque::with_capacity(POINTS + 1);
        points.extend(std::iter::repeat_n(MISSING, missing));
        self.series.push(Series {
            key,
            points,
            prev: None,
            absent: 0,
        });
        self.series.last_mut()
    }

    fn push_commands(&mut self, at: Instant, totals: Vec<Totals>) {
        let active = totals
            .into_iter()
            .enumerate()
            .filter(|(_, t)| t.calls > 0)
            .map(|(i, t)| (i as u16, t))
            .collect();
        self.commands.push_back((at, active));
        while self.commands.len() > COMMAND_WINDOW + 1 {
            self.commands.pop_front();
        }
    }

    /// Bytes held, counting capacities.
    fn memory(&self) -> usize {
        let key = |k: &Key| match k {
            Key::Pool(p) => p.capacity(),
            Key::Node {
                pool,
                shard,
                node,
                addr,
            } => pool.capacity() + shard.capacity() + node.capacity() + addr.capacity(),
        };
        std::mem::size_of::<Inner>()
            + self.times.capacity() * std::mem::size_of::<u64>()
            + self
                .series
                .iter()
                .map(|s| {
                    std::mem::size_of::<Series>()
                        + s.points.capacity() * std::mem::size_of::<Point>()
                        + key(&s.key)
                })
                .sum::<usize>()
            + self
                .commands
                .iter()
                .map(|(_, v)| {
                    std::mem::size_of::<(Instant, Vec<(u16, Totals)>)>()
                        + v.capacity() * std::mem::size_of::<(u16, Totals)>()
                })
                .sum::<usize>()
    }
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Read every pool's and node's reply counters and the per-command counters now.
    pub fn sample(&self, shared: &Shared, at: Instant, unix_ms: u64) {
        let m = &shared.metrics;
        let mut seen = Vec::new();
        for p in super::pools(shared).iter() {
            seen.push((Key::Pool(p.conf.name.clone()), m.pool_replies(p.index)));
            for s in &p.shards {
                for n in &s.view().nodes {
                    let key = Key::Node {
                        pool: p.conf.name.clone(),
                        shard: s.name.clone(),
                        node: n.label.clone(),
                        addr: n.addr.to_string(),
                    };
                    seen.push((key, Totals::of(&n.replies)));
                }
            }
        }
        let commands = m.command_totals();
        let mut inner = self.lock();
        inner.push(at, unix_ms, seen);
        inner.push_commands(at, commands);
    }

    /// The JSON document of `GET /api/history`.
    pub fn render(&self, process: &Process) -> HistoryJson {
        let inner = self.lock();
        let rate = |x: f32| (!x.is_nan()).then(|| (f64::from(x) * 10.0).round() / 10.0);
        let series = |s: &Series| SeriesJson {
            ops_per_s: s.points.iter().map(|p| rate(p.ops)).collect(),
            errors_per_s: s.points.iter().map(|p| rate(p.errors)).collect(),
            p99_us: s
                .points
                .iter()
                .map(|p| (p.p99_us != 0).then_some(p.p99_us))
                .collect(),
        };
        let mut pools = Vec::new();
        let mut nodes = Vec::new();
        for s in &inner.series {
            match &s.key {
                Key::Pool(name) => pools.push(PoolSeries {
                    pool: name.clone(),
                    series: series(s),
                }),
                Key::Node {
                    pool,
                    shard,
                    node,
                    addr,
                } => nodes.push(NodeSeries {
                    pool: pool.clone(),
                    shard: shard.clone(),
                    node: node.clone(),
                    addr: addr.clone(),
                    series: series(s),
                }),
            }
        }
        HistoryJson {
            host: process.host.clone(),
            pid: process.pid,
            config: process.config.clone(),
            interval_ms: SAMPLE_EVERY.as_millis() as u64,
            window_s: (SAMPLE_EVERY * POINTS as u32).as_secs(),
            memory_bytes: inner.memory(),
            series_dropped: inner.dropped,
            t_ms: inner.times.iter().copied().collect(),
            pools,
            nodes,
            commands: commands(&inner.commands),
        }
    }
}

/// The per-command rows over the samples kept: totals now, rates and percentiles between the
/// oldest and newest sample.
fn commands(kept: &VecDeque<(Instant, Vec<(u16, Totals)>)>) -> CommandsJson {
    let (Some((t1, newest)), Some((t0, oldest))) = (kept.back(), kept.front()) else {
        return CommandsJson::default();
    };
    let secs = t1.saturating_duration_since(*t0).as_secs_f64();
    let rows = newest
        .iter()
        .map(|(i, now)| {
            let d = oldest
                .iter()
                .find(|(j, _)| j == i)
                .map_or(Some(now.clone()), |(_, before)| delta(now, before))
                .filter(|_| secs > 0.0);
            let per_s = |n: i64| (n as f64 / secs * 10.0).round() / 10.0;
            CommandRow {
                name: command_name(usize::from(*i)),
                calls: now.calls,
                errors: now.errors,
                ops_per_s: d.as_ref().map(|d| per_s(d.calls)),
                errors_per_s: d.as_ref().map(|d| per_s(d.errors)),
                p50_us: d.as_ref().and_then(|d| percentile(&d.buckets, 0.5)),
                p99_us: d.as_ref().and_then(|d| percentile(&d.buckets, 0.99)),
            }
        })
        .collect();
    CommandsJson {
        window_s: (secs * 10.0).round() / 10.0,
        rows,
    }
}

/// Who answers: shown in the page's header.
#[derive(Clone, Debug)]
pub struct Process {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The configuration file as given on the command line, if any.
    pub config: Option<String>,
}

impl Process {
    /// This process, serving `shared`.
    pub fn current(shared: &Shared) -> Self {
        Process {
            host: super::stats_port::hostname(),
            pid: std::process::id(),
            config: shared.config_path.as_ref().map(|p| p.display().to_string()),
        }
    }
}

/// Three series of one pool or node, one entry per `t_ms`; `null` where there is no data.
#[derive(Debug, Serialize)]
pub struct SeriesJson {
    /// Replies per second.
    ops_per_s: Vec<Option<f64>>,
    /// Error replies per second.
    errors_per_s: Vec<Option<f64>>,
    /// 99th percentile of latency, µs: the upper bound of the histogram bucket holding it
    /// ([`OVER_LAST_BOUND_US`]: over 1 s); `null` in a second without replies.
    p99_us: Vec<Option<u32>>,
}

/// A pool's series.
#[derive(Debug, Serialize)]
pub struct PoolSeries {
    pool: String,
    #[serde(flatten)]
    series: SeriesJson,
}

/// A node's series: requests it served alone (split requests and local answers are counted
/// by the pool only).
#[derive(Debug, Serialize)]
pub struct NodeSeries {
    pool: String,
    shard: String,
    /// Its label (the configured name, else the address).
    node: String,
    addr: String,
    #[serde(flatten)]
    series: SeriesJson,
}

/// One command over the last samples.
#[derive(Debug, Serialize)]
pub struct CommandRow {
    name: &'static str,
    /// Since start.
    calls: i64,
    /// Error replies since start.
    errors: i64,
    ops_per_s: Option<f64>,
    errors_per_s: Option<f64>,
    p50_us: Option<u32>,
    p99_us: Option<u32>,
}

/// The commands with calls, over `window_s` seconds.
#[derive(Debug, Default, Serialize)]
pub struct CommandsJson {
    window_s: f64,
    rows: Vec<CommandRow>,
}

/// The whole `GET /api/history` document.
#[derive(Debug, Serialize)]
pub struct HistoryJson {
    host: String,
    pid: u32,
    config: Option<String>,
    interval_ms: u64,
    window_s: u64,
    memory_bytes: usize,
    series_dropped: usize,
    /// Unix time (ms) of each point, oldest first.
    t_ms: Vec<u64>,
    pools: Vec<PoolSeries>,
    nodes: Vec<NodeSeries>,
    commands: CommandsJson,
}

/// Sample `shared` into `history` every [`SAMPLE_EVERY`] until `stop` is cancelled.
pub fn start(shared: Arc<Shared>, history: Arc<History>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                at = tick.tick() => history.sample(&shared, at, unix_ms()),
            }
        }
    });
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `GET /api/history`.
pub async fn get(State(st): State<Arc<AdminState>>) -> Response {
    let body = axum::Json(st.history.render(&st.process));
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(calls: i64, errors: i64, bucket: usize) -> Totals {
        let mut t = Totals {
            calls,
            errors,
            ..Totals::default()
        };
        t.buckets[bucket] = calls;
        t
    }

    fn pool(name: &str) -> Key {
        Key::Pool(name.into())
    }

    #[test]
    fn rates_are_differences_over_the_time_between_samples() {
        let mut h = Inner::default();
        let t0 = Instant::now();
        h.push(t0, 1_000, vec![(pool("a"), totals(100, 0, 0))]);
        assert!(h.times.is_empty(), "the first sample only sets the start");
        let mut later = totals(500, 20, 0);
        later.buckets[0] = 100;
        later.buckets[3] = 400;
        h.push(t0 + Duration::from_secs(2), 3_000, vec![(pool("a"), later)]);
        let p = h.series[0].points[0];
        assert_eq!((p.ops, p.errors), (200.0, 10.0));
        assert_eq!(p.p99_us, 1_000, "the 400 new calls all took <= 1 ms");
        assert_eq!(h.times, [3_000]);
    }

    #[test]
    fn the_ring_keeps_the_window_and_aligns_new_and_gone_series() {
        let mut h = Inner::default();
        let t0 = Instant::now();
        for i in 0..(POINTS as u64 + 50) {
            let mut seen = vec![(pool("a"), totals(i as i64 * 10, 0, 0))];
            if i >= 10 {
                seen.push((pool("b"), totals(i as i64, 0, 13)));
            }
            h.push(t0 + Duration::from_secs(i), i * 1000, seen);
        }
        assert_eq!(h.times.len(), POINTS);
        for s in &h.series {
            assert_eq!(
                s.points.len(),
                POINTS,
                "every series has one point per time"
            );
        }
        let b = &h.series[1].points;
        assert_eq!(b.back().map(|p| p.p99_us), Some(OVER_LAST_BOUND_US));
        // `a` goes away: its points become missing, and after a whole window it is dropped.
        for i in 0..POINTS as u64 {
            let at = t0 + Duration::from_secs(POINTS as u64 + 50 + i);
            h.push(at, 0, vec![(pool("b"), totals(1_000 + i as i64, 0, 13))]);
            if i == 0 {
                assert!(h.series[0].points.back().is_some_and(|p| p.ops.is_nan()));
            }
        }
        assert_eq!(h.series.len(), 1);
        assert_eq!(h.series[0].key, pool("b"));
    }

    #[test]
    fn counters_that_go_back_give_no_point_and_series_are_bounded() {
        let mut h = Inner::default();
        let t0 = Instant::now();
        h.push(t0, 0, vec![(pool("a"), totals(100, 0, 0))]);
        h.push(t0 + SAMPLE_EVERY, 0, vec![(pool("a"), totals(5, 0, 0))]);
        assert!(h.series[0].points[0].ops.is_nan());
        let many = (0..MAX_SERIES + 10)
            .map(|i| (pool(&format!("p{i}")), totals(1, 0, 0)))
            .collect();
        h.push(t0 + SAMPLE_EVERY * 2, 0, many);
        assert_eq!(h.series.len(), MAX_SERIES);
        assert_eq!(h.dropped, 11, "a's slot is kept; 11 more did not fit");
        let full = h.memory();
        assert!(full < 4 << 20, "the history holds {full} bytes");
    }

    #[test]
    fn percentiles_name_the_bucket_bound() {
        let mut b = [0i64; LATENCY_BUCKETS_US.len()];
        assert_eq!(percentile(&b, 0.99), None);
        b[0] = 98;
        b[5] = 2;
        assert_eq!(percentile(&b, 0.5), Some(100));
        assert_eq!(percentile(&b, 0.99), Some(5_000));
    }
}
