//! High availability under real faults: replicas killed (-9), frozen (SIGSTOP), slowed and
//! flapping under read load; a whole shard lost; a Sentinel failover under write load with
//! the old primary coming back as a zombie.
//!
//! Each test prints what it measured (detection time, errors, latency quantiles, write
//! pause, writes lost); run with `cargo test -p rampart --test ha -- --nocapture` to see them.

#[path = "common/ha.rs"]
mod ha;

use std::time::{Duration, Instant};

use ha::{calls, preload, replica_set, short_form, HaProxy, ReadLoad};
use testkit::{poll_until, Client, RedisServer, Reply};

/// Fast health checks: a dead node leaves rotation in well under a second.
const FAST_CHECKS: &str =
    "  health_check:\n    interval: 100ms\n    timeout: 100ms\n    fall: 2\n    rise: 2\n";

/// The `cmdstat_get` calls of each server.
fn gets(servers: &[&RedisServer]) -> Vec<u64> {
    servers.iter().map(|s| calls(&s.addr(), "get")).collect()
}

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// A primary, two replicas and a short-form pool over them with `read_policy`, every node in
/// rotation and `keys` keys preloaded and replicated.
struct ReadSetup {
    primary: RedisServer,
    replicas: Vec<RedisServer>,
    proxy: HaProxy,
    keys: std::sync::Arc<Vec<(String, String)>>,
}

fn read_setup(read_policy: &str, extra: &str) -> ReadSetup {
    let (primary, replicas) = replica_set(2);
    let addrs: Vec<String> = replicas.iter().map(RedisServer::addr).collect();
    let body = short_form(
        &primary.addr(),
        &addrs,
        &format!("  read_policy: {read_policy}\n{FAST_CHECKS}{extra}"),
    );
    let proxy = HaProxy::start(&body);
    let mut all = vec![primary.addr()];
    all.extend(addrs);
    proxy.wait_up(&all, Duration::from_secs(5));
    let keys = preload(&proxy.addr(), 500, &[&replicas[0], &replicas[1]]);
    ReadSetup {
        primary,
        replicas,
        proxy,
        keys,
    }
}

/// Reads go to the replicas, not the primary (checked on the servers' own counters).
fn assert_reads_on_replicas(s: &ReadSetup) {
    let servers = [&s.primary, &s.replicas[0], &s.replicas[1]];
    let before = gets(&servers);
    let mut c = Client::connect(&s.proxy.addr());
    for (k, v) in s.keys.iter().take(200) {
        assert_eq!(c.cmd(&["GET", k]), Reply::bulk(v));
    }
    let d = delta(&gets(&servers), &before);
    println!("200 GETs before the fault: primary/replica0/replica1 served {d:?}");
    assert_eq!(d[0], 0, "prefer-replica sent reads to the primary: {d:?}");
    assert!(d[1] > 0 && d[2] > 0, "both replicas should serve: {d:?}");
}

#[test]
fn replica_kill9_under_read_load() {
    let mut s = read_setup("prefer-replica", "  timeout: 1000\n");
    assert_reads_on_replicas(&s);
    let dead = s.replicas[0].addr();
    let load = ReadLoad::start(&s.proxy.addr(), 4, &s.keys, Duration::from_secs(3));
    assert!(ha::progressed(|| load.done(), 500, Duration::from_secs(5)));

    s.replicas[0].kill9();
    let killed = Instant::now();
    // Out of rotation: the proxy's own view says so.
    let detected = poll_until(Duration::from_secs(3), || {
        let n = s.proxy.node(&dead)?;
        (!n.routable()).then(|| killed.elapsed())
    });
    // Traffic to the dead node: the proxy's request counter for it stops moving.
    let mut last = s.proxy.node(&dead).map_or(-1, |n| n.requests);
    let mut last_change = Duration::ZERO;
    while killed.elapsed() < Duration::from_millis(1500) {
        let now = s.proxy.node(&dead).map_or(-1, |n| n.requests);
        if now != last {
            last = now;
            last_change = killed.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let live = [&s.primary, &s.replicas[1]];
    let before = gets(&live);
    std::thread::sleep(Duration::from_millis(500));
    let served = delta(&gets(&live), &before);
    let report = load.stop();

    println!("replica kill -9: detection (up=0 in INFO pools) {detected:?}; last request sent to it {last_change:?} after the kill");
    println!("after detection, 500 ms: primary/replica1 served {served:?} GETs");
    println!("read load: {}", report.summary());
    for e in report.errors.iter().take(10) {
        println!("  error at {:?}: {}", e.0, e.1);
    }
    let detected = detected.unwrap_or_else(|| {
        panic!(
            "the killed replica is still in rotation 3 s later; log:\n{}",
            s.proxy.log()
        )
    });
    assert!(
        detected < Duration::from_secs(1),
        "detection took {detected:?}"
    );
    assert!(
        last_change < Duration::from_secs(1),
        "requests still sent to the dead replica {last_change:?} after the kill"
    );
    assert!(
        served[1] > 0,
        "the surviving replica serves no reads: {served:?}"
    );
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert!(
        report.errors.is_empty(),
        "{} reads failed (expected a retry on another node); first: {:?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(5)]
    );
}

#[test]
fn replica_sigstop_10s() {
    let s = read_setup("prefer-replica", "  timeout: 500\n");
    assert_reads_on_replicas(&s);
    let frozen = s.replicas[0].addr();
    let load = ReadLoad::start(&s.proxy.addr(), 4, &s.keys, Duration::from_secs(5));
    assert!(ha::progressed(|| load.done(), 500, Duration::from_secs(5)));
    let baseline_done = load.done();

    s.replicas[0].stop();
    let stopped = Instant::now();
    let detected = poll_until(Duration::from_secs(3), || {
        let n = s.proxy.node(&frozen)?;
        (!n.routable()).then(|| stopped.elapsed())
    });
    // Keep it frozen ~7 s in all, under load.
    std::thread::sleep(Duration::from_secs(7).saturating_sub(stopped.elapsed()));
    let frozen_for = stopped.elapsed();
    s.replicas[0].cont();
    let resumed = Instant::now();
    let back = poll_until(Duration::from_secs(5), || {
        s.proxy
            .node(&frozen)
            .filter(ha::NodeState::routable)
            .map(|_| resumed.elapsed())
    });
    let report = load.stop();
    let reqs = report.ok + report.errors.len() as u64 + report.mismatches.len() as u64;

    println!(
        "replica SIGSTOP for {frozen_for:?}: detection {detected:?}, back in rotation {back:?} after SIGCONT"
    );
    println!(
        "read load ({} before the freeze): {}",
        baseline_done,
        report.summary()
    );
    let slow = report
        .latencies
        .iter()
        .filter(|l| **l > Duration::from_millis(400))
        .count();
    println!("  {slow} of {reqs} reads took more than 400 ms");
    for e in report.errors.iter().take(10) {
        println!("  error at {:?}: {}", e.0, e.1);
    }
    assert!(
        detected.is_some_and(|d| d < Duration::from_secs(1)),
        "frozen replica not out of rotation within 1 s: {detected:?}"
    );
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert!(
        report.errors.is_empty(),
        "{} reads failed; first: {:?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(5)]
    );
    // A read stuck on the frozen node waits one timeout (500 ms), then is retried elsewhere.
    let p99 = report.quantile(0.99);
    let max = report.latencies.last().copied().unwrap_or_default();
    assert!(p99 < Duration::from_millis(800), "p99 {p99:?}");
    assert!(max < Duration::from_millis(1500), "max {max:?}");
    assert!(
        back.is_some(),
        "the replica did not come back after SIGCONT"
    );
}
