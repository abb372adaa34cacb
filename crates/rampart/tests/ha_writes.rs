//! Writes when primaries die: a whole shard of a pool without Sentinel down fails fast (no
//! failover can come, so holding would only delay the error), and during a Sentinel failover
//! only writes in flight at the kill may fail; every later one waits for the new primary.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::time::{Duration, Instant};

use ha::{replica_set, HaProxy, SentinelSetup, FAST_CHECKS};
use load::WriteLoad;
use testkit::{poll_until, Client, RedisServer, Reply};

/// Keys that live on shard `name`: written through the proxy, found on that primary.
fn keys_of(proxy: &HaProxy, primary: &RedisServer, prefix: &str, n: usize) -> Vec<String> {
    let mut c = Client::connect(&proxy.addr());
    let mut found = Vec::new();
    for i in 0..1000 {
        if found.len() == n {
            break;
        }
        let k = format!("{prefix}{i}");
        assert_eq!(c.cmd(&["SET", &k, "v"]), Reply::ok());
        if primary.cmd(&["EXISTS", &k]) == Reply::Int(1) {
            found.push(k);
        }
    }
    assert_eq!(found.len(), n, "not enough keys on {}", primary.addr());
    found
}

#[test]
fn whole_shard_down_fails_fast() {
    let (p0, r0) = replica_set(1);
    let (mut p1, mut r1) = replica_set(1);
    let body = format!(
        "  shards:\n    - name: left\n      primary: {}\n      replicas:\n        - {}\n    - name: right\n      primary: {}\n      replicas:\n        - {}\n{FAST_CHECKS}",
        p0.addr(),
        r0[0].addr(),
        p1.addr(),
        r1[0].addr()
    );
    let proxy = HaProxy::start(&body);
    let all = [p0.addr(), r0[0].addr(), p1.addr(), r1[0].addr()];
    proxy.wait_up(&all, Duration::from_secs(5));
    let left = keys_of(&proxy, &p0, "kl", 20);
    let right = keys_of(&proxy, &p1, "kr", 20);

    p1.kill9();
    r1[0].kill9();
    let killed = Instant::now();
    let down = poll_until(Duration::from_secs(3), || {
        let nodes = proxy.nodes();
        let right_nodes: Vec<_> = nodes.iter().filter(|n| n.shard == "right").collect();
        (right_nodes.len() == 2 && right_nodes.iter().all(|n| !n.routable()))
            .then(|| killed.elapsed())
    });
    println!("whole shard down: both nodes out of rotation after {down:?}");
    assert!(down.is_some(), "view: {:#?}", proxy.nodes());

    let mut c = Client::connect(&proxy.addr());
    let mut fail_lat = Vec::new();
    let mut errors = Vec::new();
    'keys: for k in &right {
        for args in [vec!["GET", k.as_str()], vec!["SET", k.as_str(), "w"]] {
            let t0 = Instant::now();
            let r = c.cmd(&args);
            let took = t0.elapsed();
            fail_lat.push((took, args[0]));
            match &r {
                Reply::Error(e) => assert!(e.contains("right"), "{args:?}: {e:?} names no shard"),
                other => panic!("{args:?} on a dead shard answered {other:?}"),
            }
            if !errors.iter().any(|e: &String| e.starts_with(args[0])) {
                errors.push(format!("{}: {r:?}", args[0]));
            }
            if took > Duration::from_secs(1) {
                // Far from failing fast already; more samples would only make the test slow.
                break 'keys;
            }
        }
    }
    let mut ok_lat = Vec::new();
    for k in &left {
        let t0 = Instant::now();
        assert_eq!(c.cmd(&["SET", k, "w"]), Reply::ok());
        assert_eq!(c.cmd(&["GET", k]), Reply::bulk("w"));
        ok_lat.push(t0.elapsed());
    }
    fail_lat.sort();
    ok_lat.sort();
    println!(
        "dead shard: {} requests failed, median {:?}, max {:?} ({}); errors: {:?}",
        fail_lat.len(),
        fail_lat[fail_lat.len() / 2].0,
        fail_lat[fail_lat.len() - 1].0,
        fail_lat[fail_lat.len() - 1].1,
        &errors[..errors.len().min(2)]
    );
    println!(
        "live shard: {} SET+GET pairs, max {:?}",
        ok_lat.len(),
        ok_lat[ok_lat.len() - 1]
    );
    let slow: Vec<_> = fail_lat
        .iter()
        .filter(|(d, _)| *d >= Duration::from_millis(5))
        .collect();
    assert!(
        slow.is_empty(),
        "requests to the dead shard not failed within 5 ms: {slow:?}"
    );
}

/// A write split over shards (MSET, DEL, UNLINK) is sent whole or not at all: when one of
/// its shards has no primary and none can come (a pool without Sentinel whose primary fails
/// its checks), the other shards' parts are not sent either, and the error naming the shard
/// says nothing was sent. Before, the live shard applied its part while the client read
/// "the write was not sent".
#[test]
fn a_split_write_with_a_dead_shard_changes_no_shard() {
    let (p0, r0) = replica_set(1);
    let (mut p1, r1) = replica_set(1);
    let body = format!(
        "  shards:\n    - name: left\n      primary: {}\n      replicas:\n        - {}\n    - name: right\n      primary: {}\n      replicas:\n        - {}\n{FAST_CHECKS}",
        p0.addr(),
        r0[0].addr(),
        p1.addr(),
        r1[0].addr()
    );
    let proxy = HaProxy::start(&body);
    let all = [p0.addr(), r0[0].addr(), p1.addr(), r1[0].addr()];
    proxy.wait_up(&all, Duration::from_secs(5));
    let left = keys_of(&proxy, &p0, "kl", 3);
    let right = keys_of(&proxy, &p1, "kr", 3);

    let dead = p1.addr();
    p1.kill9();
    let out = poll_until(Duration::from_secs(3), || {
        proxy.node(&dead).filter(|n| !n.routable()).map(|_| ())
    });
    assert!(out.is_some(), "view: {:#?}", proxy.nodes());

    let mut c = Client::connect(&proxy.addr());
    let requests: [Vec<&str>; 3] = [
        vec!["MSET", &left[0], "split", &right[0], "split"],
        vec!["DEL", &left[1], &right[1]],
        vec!["UNLINK", &right[2], &left[2]],
    ];
    for args in &requests {
        match c.cmd(args) {
            Reply::Error(e) => {
                assert!(
                    e.contains("'right'") && e.contains("not sent"),
                    "{args:?}: {e}"
                )
            }
            other => panic!("{args:?} with a dead shard answered {other:?}"),
        }
    }
    assert_eq!(
        [0, 1, 2].map(|i| p0.cmd(&["GET", &left[i]])),
        [Reply::bulk("v"), Reply::bulk("v"), Reply::bulk("v")],
        "the live shard applied part of a split write that answered an error"
    );
    // The live shard alone still takes split writes.
    assert_eq!(c.cmd(&["DEL", &left[0], &left[1]]), Reply::Int(2));
}

/// Writers write one key at a time, so at the instant of a kill -9 each has at most one
/// write in flight; only those may fail. Every later write has not been sent anywhere when
/// the proxy learns the primary is gone, so it must wait in the failover hold and reach the
/// new primary.
#[test]
fn sentinel_failover_fails_only_writes_in_flight() {
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
    let (switch_after, _) = s.wait_switch(Instant::now(), Duration::from_secs(20));
    assert!(load::progressed(
        || load.acked(),
        300,
        Duration::from_secs(10)
    ));
    let report = load.stop();
    let per_writer = load::errors_per_writer(&report, WRITERS);
    println!(
        "failover after {switch_after:?}: {} writes acknowledged, {} errors (per writer {per_writer:?})",
        report.acks.len(),
        report.errors.len()
    );
    for (at, e) in &report.errors {
        println!(
            "  error at kill{:+.3}s: {e}",
            at.as_secs_f64() - kill_at.as_secs_f64()
        );
    }
    assert!(
        per_writer.iter().all(|n| *n <= 1),
        "writes sent after the kill failed instead of waiting for the new primary: {:?}",
        report.errors
    );
}

/// Reads of a `read_policy: primary` pool through a Sentinel failover (kill -9 of the
/// primary): a read that finds no node while the shard has no primary waits for the new one,
/// as a write does, so readers see no error but the one in flight at the kill (at most one
/// per reader). Before, every read in the failover's seconds failed with "no node available
/// for reads".
#[test]
fn sentinel_failover_fails_no_read_sent_after_the_kill() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const READERS: usize = 3;
    let mut s = SentinelSetup::start("  failover_hold: 10s\n  read_policy: primary\n");
    let mut c = Client::connect(&s.proxy.addr());
    assert_eq!(c.cmd(&["SET", "r", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["WAIT", "2", "5000"]), Reply::Int(2));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (stop, addr) = (Arc::clone(&stop), s.proxy.addr());
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                c.set_read_timeout(Some(Duration::from_secs(20)));
                let (mut reads, mut errors) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match c.try_cmd(&["GET", "r"]) {
                        Ok(Reply::Bulk(Some(_))) => reads += 1,
                        Ok(other) => errors.push(format!("{other:?}")),
                        Err(e) => {
                            errors.push(format!("connection: {e}"));
                            c = Client::connect(&addr);
                            c.set_read_timeout(Some(Duration::from_secs(20)));
                        }
                    }
                }
                (reads, errors)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    s.primary.kill9();
    let (switch_after, _) = s.wait_switch(Instant::now(), Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for r in readers {
        let (reads, errors) = r.join().expect("reader");
        println!("reader: {reads} reads, errors {errors:?}");
        assert!(reads > 0, "a reader read nothing");
        all.push(errors);
    }
    println!("failover after {switch_after:?}");
    assert!(
        all.iter().all(|e| e.len() <= 1),
        "reads sent after the kill failed instead of waiting for the new primary: {all:?}"
    );
}

/// A read pipelined behind the client's own write during a switchover waits behind it in the
/// hold, as one Redis connection runs its commands in order: four clients pipeline `SET k_i`
/// and `GET k_i` (a new key each time) through `RAMPART SWITCHOVER`, and every GET sees its
/// SET. Before, a read went to the primary while the SET before it waited in the hold, and
/// read nothing (1 to 4 times per switchover).
#[test]
fn a_read_behind_the_clients_held_write_waits_for_it_during_a_switchover() {
    let (primary, replicas) = replica_set(1);
    let body = ha::short_form(
        &primary.addr(),
        &[replicas[0].addr()],
        "  read_policy: primary\n  failover_hold: 5s\n",
    );
    let proxy = HaProxy::start(&body);
    proxy.wait_up(
        &[primary.addr(), replicas[0].addr()],
        Duration::from_secs(10),
    );
    read_behind_held_write(&proxy.addr(), None, ha::POOL, "rw");
}

/// The same in a replica set whose servers need a password, its clients giving it.
#[test]
fn a_read_behind_the_clients_held_write_waits_for_it_with_a_backend_password() {
    const PW: &str = "rw-pw";
    let (primary, replicas) = replica_set(1);
    ha::protect(&primary, &replicas, PW);
    let body = ha::short_form(
        &primary.addr(),
        &[replicas[0].addr()],
        &format!("  redis_auth: {PW}\n  read_policy: primary\n  failover_hold: 5s\n"),
    );
    let proxy = HaProxy::start(&body);
    // Both nodes in rotation, as a client that gave the password sees INFO pools.
    testkit::wait_until(Duration::from_secs(15), "both nodes in rotation", || {
        let mut c = Client::connect(&proxy.addr());
        c.cmd(&["AUTH", PW]) == Reply::ok()
            && matches!(c.cmd(&["INFO", "pools"]), Reply::Bulk(Some(b))
                if String::from_utf8_lossy(&b).lines().filter(|l| l.contains("up=1")).count() >= 2)
    });
    read_behind_held_write(&proxy.addr(), Some(PW), ha::POOL, "rw");
}

/// Four clients pipeline `SET k x` + `GET k` (k under `prefix`) through `addr` (after
/// `AUTH auth`, if given) while `RAMPART SWITCHOVER shard` runs: the switchover succeeds
/// and every GET sees the SET before it.
fn read_behind_held_write(addr: &str, auth: Option<&str>, shard: &str, prefix: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let connect = |addr: &str| {
        let mut c = Client::connect(addr);
        if let Some(pw) = auth {
            assert_eq!(c.cmd(&["AUTH", pw]), Reply::ok());
        }
        c
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, mut c, prefix) = (Arc::clone(&stop), connect(addr), prefix.to_string());
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(20)));
                let (mut pairs, mut wrong) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("{prefix}:{t}:{pairs}");
                    let r = c.pipeline(&[vec!["SET", &k, "x"], vec!["GET", &k]]);
                    if r != [Reply::ok(), Reply::bulk("x")] {
                        wrong.push(format!("{k}: {r:?}"));
                    }
                    pairs += 1;
                }
                (pairs, wrong)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut admin = connect(addr);
    admin.set_read_timeout(Some(Duration::from_secs(30)));
    let reply = admin.cmd(&["RAMPART", "SWITCHOVER", shard]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (mut pairs, mut wrong) = (0, Vec::new());
    for c in clients {
        let (p, w) = c.join().expect("client");
        pairs += p;
        wrong.extend(w);
    }
    println!(
        "switchover: {reply:?}; {pairs} SET/GET pairs, {} wrong",
        wrong.len()
    );
    assert!(
        matches!(&reply, Reply::Simple(m) if m.contains("switched to")),
        "the switchover: {reply:?}"
    );
    assert!(
        wrong.is_empty(),
        "{} of {pairs} GETs did not see the SET before them: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}
