//! High availability under real faults: replicas killed (-9), frozen (SIGSTOP), slowed and
//! flapping under read load; a whole shard lost; a Sentinel failover under write load with
//! the old primary coming back as a zombie; a failover of a primary that is still up.
//!
//! Each test prints what it measured (detection time, errors, latency quantiles, write
//! pause, writes lost); run with `cargo test -p rampart --test ha -- --nocapture` to see them.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::time::{Duration, Instant};

use ha::{delta, gets, read_setup, ReadSetup, SentinelSetup};
use load::{missing_writes, Ack, CommandTap, ReadLoad, WriteLoad};
use testkit::{poll_until, Client, Reply};

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
    assert!(load::progressed(
        || load.done(),
        500,
        Duration::from_secs(5)
    ));

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
    assert!(load::progressed(
        || load.done(),
        500,
        Duration::from_secs(5)
    ));
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

#[test]
fn sentinel_failover_under_write_load() {
    const WRITERS: usize = 3;
    let mut s = SentinelSetup::start("  failover_hold: 10s\n");
    let load = WriteLoad::start(&s.proxy.addr(), WRITERS, Duration::from_secs(15));
    assert!(load::progressed(
        || load.acked(),
        300,
        Duration::from_secs(5)
    ));
    let kill_at = load.started().elapsed();
    s.primary.kill9();
    let (switch_after, new_port) = s.wait_switch(Instant::now(), Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let acked_before_restart = load.acked();
    let errors_before_restart = load.errors();

    // The old primary comes back with its old configuration: it claims master until
    // Sentinel converts it (about 10 s). The proxy must send it no write meanwhile.
    s.primary.restart();
    let tap = CommandTap::start(&s.primary.addr());
    let restarted = Instant::now();
    let converted = poll_until(Duration::from_secs(14), || {
        (s.primary.role() == "slave" && restarted.elapsed() >= Duration::from_secs(3))
            .then(|| restarted.elapsed())
    });
    let zombie_window = restarted.elapsed();
    let acked_during_window = load.acked() - acked_before_restart;
    let report = load.stop();
    let taps = tap.stop();

    // Every acknowledged write must be on the primary Sentinel names at the end. That is
    // normally the replica promoted after the kill; on a loaded machine Sentinel has been seen
    // to fail over a second time, and then the writes must be on that one.
    let final_port = s.sentinels[0]
        .master_addr(ha::MASTER)
        .map_or(new_port, |(_, port)| port);
    if final_port != new_port {
        println!("Sentinel failed over again: the primary is now port {final_port}");
    }
    let new_primary = s.node_on(final_port);
    let missing = missing_writes(new_primary, &report.acks);
    let grace = kill_at + Duration::from_millis(50);
    let (lost_at_kill, lost_after): (Vec<&Ack>, Vec<&Ack>) =
        missing.iter().partition(|a| a.at <= grace);
    let zombie_sets = taps.commands_not_from("set", &new_primary.addr());
    let (pause, pause_from) = report.longest_pause();

    println!(
        "sentinel failover: kill at {kill_at:?}, get-master-addr-by-name switched after {switch_after:?}"
    );
    println!(
        "writes: {} acknowledged, {} errors (per writer {:?}), p50={:?} p99={:?} max={:?}",
        report.acks.len(),
        report.errors.len(),
        load::errors_per_writer(&report, WRITERS),
        report.quantile(0.5),
        report.quantile(0.99),
        report.latencies.last().copied().unwrap_or_default()
    );
    println!(
        "write pause: {pause:?} without any acknowledgement, from {:?} after the kill",
        pause_from.saturating_sub(kill_at)
    );
    for (at, e) in report.errors.iter().take(10) {
        println!(
            "  error at kill{:+.3}s: {e}",
            at.as_secs_f64() - kill_at.as_secs_f64()
        );
    }
    println!(
        "acknowledged writes missing on the new primary: {} acked at the kill (async replication), {} after it",
        lost_at_kill.len(),
        lost_after.len()
    );
    println!(
        "old primary back as a zombie, watched {zombie_window:?} (converted to replica after {converted:?}); \
         {acked_during_window} writes acked meanwhile; SETs it received from clients other than its \
         new primary: {} (MONITOR lines: {}, ended: {:?})",
        zombie_sets.len(),
        taps.lines.len(),
        taps.ended
    );

    assert!(
        zombie_sets.is_empty(),
        "the proxy wrote to the restarted old primary: {:?}",
        &zombie_sets[..zombie_sets.len().min(5)]
    );
    assert!(
        lost_after.is_empty(),
        "{} writes acknowledged after the kill are not on the new primary: {:?}; proxy log:\n{}",
        lost_after.len(),
        &lost_after[..lost_after.len().min(5)],
        s.proxy
            .log_lines(&["sentinel", "node", "primary", "switch"])
            .join("\n")
            + &s.failover_log()
    );
    assert!(
        acked_during_window > 0,
        "no write was acknowledged after the old primary came back"
    );
    // A second failover (Sentinel on a starved machine losing sight of the new primary for
    // its 1 s down-after) is not the one this test makes: writes in flight at that one may
    // fail like those at the kill. The safety checks above hold whatever Sentinel does.
    let switches = s.sentinels[0]
        .log()
        .lines()
        .filter(|l| l.contains("+switch-master"))
        .count();
    if final_port == new_port && switches <= 1 {
        assert_eq!(
            errors_before_restart,
            report.errors.len(),
            "writes failed while the old primary was back: {:?}",
            report.errors
        );
    }
    assert!(
        pause < Duration::from_secs(10),
        "writes paused {pause:?}, longer than failover_hold"
    );
    // Sentinel's conversion kills normal clients (CLIENT KILL TYPE normal), MONITOR included.
    assert!(
        taps.ended.is_none() || converted.is_some(),
        "MONITOR ended before the conversion: {:?}",
        taps.ended
    );
}

/// A failover of a primary that is still up (`SENTINEL FAILOVER`, or a false detection on a
/// loaded network) loses no acknowledged write: writes are held from the sentinel's
/// `+try-failover` until the promoted replica is applied, so the old primary acknowledges
/// nothing after its replica stopped following it. Without the hold, the old primary kept
/// acknowledging writes until `+switch-master` (hundreds to thousands, lost when Sentinel
/// turned it into a replica).
#[test]
fn sentinel_failover_of_a_live_primary_loses_no_acknowledged_write() {
    const WRITERS: usize = 3;
    let s = SentinelSetup::start("  failover_hold: 10s\n");
    let load = WriteLoad::start(&s.proxy.addr(), WRITERS, Duration::from_secs(10));
    assert!(load::progressed(
        || load.acked(),
        300,
        Duration::from_secs(5)
    ));
    let asked = Instant::now();
    let reply = s.sentinels[0].cmd(&["SENTINEL", "FAILOVER", ha::MASTER]);
    assert_eq!(reply, Reply::ok(), "SENTINEL FAILOVER");
    let (switch_after, new_port) = s.wait_switch(asked, Duration::from_secs(20));
    // Sentinel turns the old primary into a replica of the new one; from then on whatever
    // only the old primary had is gone.
    let converted = poll_until(Duration::from_secs(20), || {
        (s.primary.role() == "slave").then(|| asked.elapsed())
    });
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    let final_port = s.sentinels[0]
        .master_addr(ha::MASTER)
        .map_or(new_port, |(_, port)| port);
    let new_primary = s.node_on(final_port);
    let missing = missing_writes(new_primary, &report.acks);
    let (pause, _) = report.longest_pause();
    let held = s.proxy.log_lines(&["holding writes", "held writes"]);
    println!(
        "live failover: switched after {switch_after:?}, old primary converted after {converted:?}; \
         writes: {} acknowledged, {} errors, longest pause {pause:?}, {} missing on the new primary",
        report.acks.len(),
        report.errors.len(),
        missing.len()
    );
    for l in &held {
        println!("  {l}");
    }
    assert!(
        converted.is_some(),
        "Sentinel never converted the old primary"
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged writes are not on the new primary: {:?}; proxy log:\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        s.proxy
            .log_lines(&["sentinel", "primary", "switch", "writes"])
            .join("\n")
            + &s.failover_log()
    );
    assert!(
        report.errors.is_empty(),
        "writes failed during the failover: {:?}",
        &report.errors[..report.errors.len().min(5)]
    );
    assert!(
        !held.is_empty(),
        "the proxy never said it held writes for the failover"
    );
}

#[test]
fn latency_policy_avoids_a_slow_replica() {
    ha::slow_replica_run("latency");
}

#[test]
fn least_outstanding_avoids_a_slow_replica() {
    ha::slow_replica_run("least-outstanding");
}

/// One restart of the flapping replica, as measured.
#[derive(Debug)]
struct Flap {
    /// From the kill until the proxy showed the node out of rotation.
    down_after: Option<Duration>,
    /// From the restart until the node served its first GET from the proxy.
    serving_after: Option<Duration>,
    /// GETs it had served at a moment the proxy still showed it out of rotation.
    early_gets: u64,
}

#[test]
fn replica_flapping() {
    let mut s = read_setup("prefer-replica", "  timeout: 1000\n");
    let flapper = s.replicas[0].addr();
    let load = ReadLoad::start(&s.proxy.addr(), 4, &s.keys, Duration::from_secs(3));
    assert!(load::progressed(
        || load.done(),
        500,
        Duration::from_secs(5)
    ));
    let started = Instant::now();
    let load_started = load.started();
    let mut flaps = Vec::new();
    for cycle in 0..5u32 {
        let cycle_start = started + Duration::from_secs(2) * cycle;
        s.replicas[0].kill9();
        let killed = Instant::now();
        let down_after = poll_until(Duration::from_millis(900), || {
            let n = s.proxy.node(&flapper)?;
            (!n.routable()).then(|| killed.elapsed())
        });
        std::thread::sleep(
            (cycle_start + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
        );
        s.replicas[0].restart();
        let restarted = Instant::now();
        let mut early_gets = 0;
        let mut serving_after = None;
        // Until the next kill: the GETs it served, read before the proxy's view, must be 0
        // whenever that view still shows it out of rotation.
        while Instant::now() < cycle_start + Duration::from_secs(2) {
            let served = ha::try_calls(&flapper, "get").unwrap_or(0);
            let routable = s.proxy.node(&flapper).is_some_and(|n| n.routable());
            if served > 0 && !routable {
                early_gets = early_gets.max(served);
            }
            if served > 0 && serving_after.is_none() {
                serving_after = Some(restarted.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        flaps.push(Flap {
            down_after,
            serving_after,
            early_gets,
        });
    }
    let report = load.stop();
    let node = s.proxy.node(&flapper);
    let log = s.proxy.log_lines(&[flapper.as_str()]);
    let transitions = log
        .iter()
        .filter(|l| l.contains("node up") || l.contains("node down"))
        .count();

    println!("replica flapping (killed every 2 s, restarted 1 s later, 5 times):");
    for (i, f) in flaps.iter().enumerate() {
        println!("  cycle {i}: {f:?}");
    }
    let served = flaps.iter().filter(|f| f.serving_after.is_some()).count();
    println!(
        "served reads again in {served} of {} cycles (passive ejection backs off)",
        flaps.len()
    );
    println!("read load: {}", report.summary());
    println!(
        "proxy log lines naming the replica: {} ({transitions} up/down transitions); final view {node:?}",
        log.len()
    );
    for l in log.iter().take(12) {
        println!("  {l}");
    }
    if let (Some(first), Some(last)) = (report.errors.first(), report.errors.last()) {
        println!(
            "  {} errors between {:?} and {:?} after the first kill",
            report.errors.len(),
            first.0.saturating_sub(started - load_started),
            last.0.saturating_sub(started - load_started)
        );
    }
    for e in report.errors.iter().take(5) {
        println!("  error at {:?}: {}", e.0, e.1);
    }
    let early: Vec<_> = flaps.iter().filter(|f| f.early_gets > 0).collect();
    assert!(
        early.is_empty(),
        "reads reached the replica before it passed its checks: {early:?}"
    );
    assert!(
        flaps.iter().all(|f| f.down_after.is_some()),
        "the killed replica stayed in rotation: {flaps:?}"
    );
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert!(
        report.errors.is_empty(),
        "{} reads failed; first: {:?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(5)]
    );
    // Health-check reconnects are paced by the check interval, not by the read load.
    assert!(
        log.len() <= 60,
        "{} log lines about the flapping replica",
        log.len()
    );
}
