//! Reads while the primary is down: a replica whose replication link is down because its
//! primary died keeps serving reads (stale) for at most `max_stale`, counted per node; a
//! replica in a full sync or loading its data set never serves.
//!
//! Each test prints what it measured; run with
//! `cargo test -p rampart --test ha_stale -- --nocapture` to see them.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ha::{delta, gets, preload, read_setup, short_form, HaProxy, SentinelSetup, FAST_CHECKS, POOL};
use load::ReadLoad;
use testkit::{poll_until, Client, RedisServer, Reply};

/// `reads_stale` of every node in the proxy's `INFO pools`, by address.
fn stale_reads(proxy: &HaProxy) -> BTreeMap<String, u64> {
    let mut c = Client::connect(&proxy.addr());
    let text = match c.cmd(&["INFO", "pools"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO pools: unexpected reply {other:?}"),
    };
    text.lines()
        .filter(|l| l.starts_with(&format!("node_{POOL}_")))
        .filter_map(|l| {
            let fields = l.split_once(':')?.1;
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                    .map(str::to_string)
            };
            Some((field("addr")?, field("reads_stale")?.parse().ok()?))
        })
        .collect()
}

#[test]
fn sentinel_primary_kill9_reads_stay_up_on_stale_replicas() {
    let mut s = SentinelSetup::start("  read_policy: prefer-replica\n  timeout: 1000\n");
    let replicas: Vec<String> = s.replicas.iter().map(|r| r.addr()).collect();
    s.proxy.wait_up(&replicas, Duration::from_secs(5));
    let keys = preload(&s.proxy.addr(), 500, &[&s.replicas[0], &s.replicas[1]]);
    let load = ReadLoad::start(&s.proxy.addr(), 2, &keys, Duration::from_secs(3));
    assert!(load::progressed(
        || load.done(),
        300,
        Duration::from_secs(5)
    ));
    let kill_at = load.started().elapsed();
    s.primary.kill9();
    let killed = Instant::now();
    let (switch_after, new_port) = s.wait_switch(killed, Duration::from_secs(20));
    // Until the proxy routes writes to the promoted replica, and one second more.
    let promoted = format!("127.0.0.1:{new_port}");
    let applied = poll_until(Duration::from_secs(10), || {
        s.proxy
            .node(&promoted)
            .filter(|n| n.role == "primary" && n.routable())
            .map(|_| killed.elapsed())
    });
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    let stale = stale_reads(&s.proxy);
    println!(
        "primary kill -9 at {kill_at:?}; Sentinel named {promoted} after {switch_after:?}, \
         the proxy routed to it after {applied:?}"
    );
    println!("reads: {}", report.summary());
    println!("stale reads per node: {stale:?}");
    for (at, e) in report.errors.iter().take(10) {
        println!(
            "  error at kill{:+.3}s: {e}",
            at.as_secs_f64() - kill_at.as_secs_f64()
        );
    }
    assert!(applied.is_some(), "the proxy never applied the failover");
    assert!(
        report.errors.is_empty(),
        "{} reads failed across the failover: {:?}; proxy log:\n{}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(5)],
        s.proxy
            .log_lines(&["node", "sentinel", "primary"])
            .join("\n")
    );
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    let served: u64 = replicas.iter().filter_map(|r| stale.get(r)).sum();
    assert!(
        served > 0,
        "no read counted as served stale by a replica: {stale:?}"
    );
    assert_eq!(
        stale.get(&s.primary.addr()).copied().unwrap_or(0),
        0,
        "the dead primary counted stale reads: {stale:?}"
    );
}

#[test]
fn short_form_replicas_serve_stale_for_max_stale_then_leave() {
    let mut s = read_setup("prefer-replica", "  max_stale: 2s\n  timeout: 1000\n");
    let load = ReadLoad::start(&s.proxy.addr(), 2, &s.keys, Duration::from_secs(3));
    assert!(load::progressed(
        || load.done(),
        300,
        Duration::from_secs(5)
    ));
    let kill_at = load.started().elapsed();
    s.primary.kill9();
    let killed = Instant::now();
    // The replicas notice at once; reads go on from them while their link is down.
    let seen = poll_until(Duration::from_secs(3), || {
        let st = stale_reads(&s.proxy);
        (s.replicas
            .iter()
            .all(|r| st.get(&r.addr()).copied().unwrap_or(0) > 0))
        .then(|| killed.elapsed())
    });
    let served_stale = load.done();
    // Past max_stale (whole seconds as Redis counts them, then one check), they leave.
    let out = poll_until(Duration::from_secs(6), || {
        let nodes = s.proxy.nodes();
        s.replicas
            .iter()
            .all(|r| {
                nodes
                    .iter()
                    .any(|n| n.addr == r.addr() && n.status == "out")
            })
            .then(|| killed.elapsed())
    });
    let left_at = load.done();
    let report = load.stop();
    println!(
        "kill -9 of the primary: both replicas counted stale reads after {seen:?}; \
         {served_stale} reads done then; out of rotation after {out:?} ({left_at} reads done)"
    );
    println!("reads: {}", report.summary());
    println!(
        "replica reasons: {:?}",
        s.proxy
            .nodes()
            .iter()
            .map(|n| (n.addr.clone(), n.reason.clone()))
            .collect::<Vec<_>>()
    );
    assert!(
        seen.is_some(),
        "replicas did not serve stale: {:?}",
        stale_reads(&s.proxy)
    );
    let out = out.unwrap_or_else(|| {
        panic!(
            "replicas still serve past max_stale: {:#?}",
            s.proxy.nodes()
        )
    });
    assert!(
        out >= Duration::from_secs(2),
        "replicas left before max_stale: {out:?}"
    );
    // No read failed within max_stale of the kill; after it, reads fail saying why.
    let early: Vec<_> = report
        .errors
        .iter()
        .filter(|(t, _)| t.saturating_sub(kill_at) < Duration::from_secs(2))
        .collect();
    assert!(
        early.is_empty(),
        "{} reads failed within max_stale: {:?}",
        early.len(),
        &early[..early.len().min(5)]
    );
    let mut c = Client::connect(&s.proxy.addr());
    match c.cmd(&["GET", "key_1"]) {
        Reply::Error(e) => assert!(e.contains("no node available for reads"), "{e}"),
        other => panic!("a read past max_stale answered {other:?}"),
    }
}

#[test]
fn a_replica_in_a_full_sync_never_serves_reads() {
    // A primary whose replication id can be changed (DEBUG CHANGE-REPL-ID), so a replica
    // that reconnects needs a full sync, and whose full syncs take 100 ms per key.
    let primary = RedisServer::start_with(&["--enable-debug-command", "local"]);
    let replicas: Vec<RedisServer> = (0..2)
        .map(|_| RedisServer::start_replica_of(&primary))
        .collect();
    let addrs: Vec<String> = replicas.iter().map(RedisServer::addr).collect();
    let proxy = HaProxy::start(&short_form(
        &primary.addr(),
        &addrs,
        &format!("  read_policy: prefer-replica\n  max_stale: 30s\n{FAST_CHECKS}"),
    ));
    let mut all = vec![primary.addr()];
    all.extend(addrs.iter().cloned());
    proxy.wait_up(&all, Duration::from_secs(5));
    let keys = preload(&proxy.addr(), 300, &[&replicas[0], &replicas[1]]);
    let (syncing, other) = (&replicas[0], &replicas[1]);
    for (k, v) in [
        ("repl-diskless-sync-delay", "0"),
        ("rdb-key-save-delay", "100000"),
    ] {
        assert_eq!(primary.cmd(&["CONFIG", "SET", k, v]), Reply::ok(), "{k}");
    }
    assert_eq!(primary.cmd(&["DEBUG", "CHANGE-REPL-ID"]), Reply::ok());
    // The replica drops its link itself; it comes back asking for a partial sync of a
    // history the primary no longer has.
    assert!(matches!(
        syncing.cmd(&["CLIENT", "KILL", "TYPE", "master"]),
        Reply::Int(1)
    ));
    testkit::wait_until(
        Duration::from_secs(10),
        "the replica to start a full sync",
        || {
            syncing
                .info("replication")
                .contains("master_sync_in_progress:1")
        },
    );
    let info = syncing.info("replication");
    let down_since = info
        .lines()
        .find_map(|l| l.strip_prefix("master_link_down_since_seconds:"))
        .and_then(|v| v.trim().parse::<i64>().ok());
    println!("the syncing replica: master_link_down_since_seconds {down_since:?}");
    assert!(
        down_since.is_some_and(|d| (0..30).contains(&d)),
        "the link should be down for less than max_stale: {info}"
    );
    // Up as far as its checks go, but out of the read rotation.
    let out = poll_until(Duration::from_secs(5), || {
        proxy
            .node(&syncing.addr())
            .filter(|n| n.up && n.status == "out")
    });
    assert!(
        out.is_some(),
        "the syncing replica is not shown out of rotation: {:#?}",
        proxy.nodes()
    );
    println!(
        "the proxy says: {}",
        out.map(|n| n.reason).unwrap_or_default()
    );
    let servers = [&primary, syncing, other];
    let before = gets(&servers);
    let mut p = Client::connect(&proxy.addr());
    for (k, v) in keys.iter() {
        assert_eq!(p.cmd(&["GET", k]), Reply::bulk(v));
    }
    let d = delta(&gets(&servers), &before);
    println!("300 GETs during the full sync: primary/syncing/other served {d:?}");
    assert!(
        syncing
            .info("replication")
            .contains("master_sync_in_progress:1"),
        "the sync ended during the reads"
    );
    assert_eq!(d[1], 0, "the replica in a full sync served reads: {d:?}");
    assert_eq!(d[0] + d[2], 300, "{d:?}");
    let stale = stale_reads(&proxy);
    assert_eq!(
        stale.get(&syncing.addr()).copied().unwrap_or(0),
        0,
        "{stale:?}"
    );
}

#[test]
fn a_replica_loading_its_data_never_serves_reads() {
    let primary = RedisServer::start();
    let port = primary.port().to_string();
    // Loads its data set slowly (10 ms per key), answering LOADING now and then meanwhile.
    let mut loading = RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &port,
        "--key-load-delay",
        "10000",
        "--loading-process-events-interval-bytes",
        "1024",
    ]);
    loading.wait_replication_up(Duration::from_secs(10));
    let other = RedisServer::start_replica_of(&primary);
    let addrs = vec![loading.addr(), other.addr()];
    let proxy = HaProxy::start(&short_form(
        &primary.addr(),
        &addrs,
        &format!("  read_policy: prefer-replica\n{FAST_CHECKS}"),
    ));
    let mut all = vec![primary.addr()];
    all.extend(addrs.iter().cloned());
    proxy.wait_up(&all, Duration::from_secs(5));
    let keys = preload(&proxy.addr(), 300, &[&loading, &other]);
    assert_eq!(loading.cmd(&["SAVE"]), Reply::ok());

    // Restarted, it loads the 300 keys it saved for about 3 s.
    let addr = loading.addr();
    let restarting = std::thread::spawn(move || {
        loading.restart();
        loading
    });
    let seen = poll_until(Duration::from_secs(5), || {
        let mut c = Client::try_connect(&addr).ok()?;
        match c.try_cmd(&["INFO", "persistence"]).ok()? {
            Reply::Bulk(Some(b)) if String::from_utf8_lossy(&b).contains("loading:1") => Some(()),
            _ => None,
        }
    });
    assert!(
        seen.is_some(),
        "the restarted replica was never seen loading"
    );
    let mut p = Client::connect(&proxy.addr());
    let mut served = 0;
    for (k, v) in keys.iter() {
        assert_eq!(p.cmd(&["GET", k]), Reply::bulk(v), "a read during the load");
        served += 1;
    }
    let state = proxy.node(&addr);
    println!("{served} GETs while a replica loads; the proxy says of it: {state:?}");
    assert!(
        state.as_ref().is_some_and(|n| n.status != "up"),
        "the loading replica is in rotation: {state:?}"
    );
    let still = Client::try_connect(&addr)
        .ok()
        .and_then(|mut c| c.try_cmd(&["INFO", "persistence"]).ok());
    assert!(
        matches!(&still, Some(Reply::Bulk(Some(b))) if String::from_utf8_lossy(b).contains("loading:1")),
        "the load ended during the reads: {still:?}"
    );
    let loading = restarting
        .join()
        .unwrap_or_else(|_| panic!("restart panicked"));
    // Loaded, it comes back.
    proxy.wait_up(&[loading.addr()], Duration::from_secs(10));
}
