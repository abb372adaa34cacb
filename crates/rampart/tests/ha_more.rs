//! More high-availability cases against real redis-server processes: reads that prefer the
//! proxy's own zone and fall back to another zone when its replica dies, a write refused with
//! READONLY that waits in the failover hold instead of failing, a write in flight while its
//! primary hands over answered instead of failed, and nodes named by DNS name.
//! (The planned switchover through Sentinel under write load is in ha_switchover.rs.)
//!
//! Each test prints what it measured; run with
//! `cargo test -p rampart --test ha_more -- --nocapture` to see the figures.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ha::{delta, gets, preload, replica_set, short_form, HaProxy, FAST_CHECKS};
use load::{missing_writes, ReadLoad, WriteLoad};
use testkit::{poll_until, Client, RedisServer, Reply};

/// Field `field` (such as `rejected_calls`) of `cmdstat_<cmd>` in the server's
/// `INFO commandstats`; 0 when the command was never called.
fn cmdstat(server: &RedisServer, cmd: &str, field: &str) -> u64 {
    let prefix = format!("cmdstat_{cmd}:");
    let key = format!("{field}=");
    server
        .info("commandstats")
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|f| f.split(',').find_map(|kv| kv.strip_prefix(key.as_str())))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A primary with one synced replica, and rampart over them with [`FAST_CHECKS`] and
/// `failover_hold: <hold>`, both nodes up.
fn replica_pair(hold: &str) -> (RedisServer, Vec<RedisServer>, HaProxy) {
    replica_pair_with(&format!("  failover_hold: {hold}\n"))
}

/// [`replica_pair`] with the pool lines `extra` (indented) instead of the hold alone.
fn replica_pair_with(extra: &str) -> (RedisServer, Vec<RedisServer>, HaProxy) {
    let (primary, replicas) = replica_set(1);
    replicas[0].wait_replication_up(Duration::from_secs(10));
    let body = short_form(
        &primary.addr(),
        &[replicas[0].addr()],
        &format!("{FAST_CHECKS}{extra}"),
    );
    let proxy = HaProxy::start(&body);
    proxy.wait_up(
        &[primary.addr(), replicas[0].addr()],
        Duration::from_secs(5),
    );
    (primary, replicas, proxy)
}

/// Reload `proxy` with its file plus the pool line `line` (the pool is rebuilt), and wait
/// until it says it reloaded.
fn reload_adding(proxy: &HaProxy, line: &str) {
    reload_to(proxy, &format!("{}  {line}\n", proxy.yaml));
}

/// Reload `proxy` with the file `yaml`, and wait until it says it reloaded.
fn reload_to(proxy: &HaProxy, yaml: &str) {
    std::fs::write(proxy.proxy.dir().join("ha.yml"), yaml).expect("rewrite the configuration");
    proxy.proxy.signal("HUP");
    let reloaded = poll_until(Duration::from_secs(5), || {
        proxy.log().contains("reload: ").then_some(())
    });
    assert!(reloaded.is_some(), "no reload in the log:\n{}", proxy.log());
}

/// Pool lines for the tests that run Redis' `FAILOVER` under a write load: the hold, and a
/// pool timeout longer than the write pause FAILOVER makes on the primary.
const FAILOVER_LINES: &str = "  failover_hold: 5s\n  timeout: 3000\n";

/// Reads go to the replica in the proxy's zone only; when it dies, to the replica of the
/// other zone (not the primary), and no read fails, not even those in flight at the kill.
#[test]
fn zone_preference() {
    let (primary, mut replicas) = replica_set(2);
    let (zone_a, zone_b) = (replicas[0].addr(), replicas[1].addr());
    let body = format!(
        "  primary: {}\n  replicas:\n    - {{addr: \"{zone_a}\", zone: a}}\n    - {{addr: \"{zone_b}\", zone: b}}\n  zone: a\n  read_policy: prefer-replica\n  timeout: 1000\n{FAST_CHECKS}",
        primary.addr()
    );
    let proxy = HaProxy::start(&body);
    proxy.wait_up(
        &[primary.addr(), zone_a.clone(), zone_b.clone()],
        Duration::from_secs(5),
    );
    let keys = preload(&proxy.addr(), 100, &[&replicas[0], &replicas[1]]);

    let servers = [&primary, &replicas[0], &replicas[1]];
    let before = gets(&servers);
    let mut c = Client::connect(&proxy.addr());
    for (k, v) in keys.iter() {
        assert_eq!(
            c.cmd(&["GET", k]),
            Reply::bulk(v),
            "GET {k} before the kill"
        );
    }
    let served = delta(&gets(&servers), &before);
    println!("zone a: 100 GETs, primary/zone-a replica/zone-b replica served {served:?}");
    assert_eq!(
        served,
        vec![0, 100, 0],
        "reads should all go to the replica in the proxy's zone"
    );

    let load = ReadLoad::start(&proxy.addr(), 2, &keys, Duration::from_secs(3));
    assert!(load::progressed(
        || load.done(),
        200,
        Duration::from_secs(5)
    ));
    replicas[0].kill9();
    let killed = Instant::now();
    let detected = poll_until(Duration::from_secs(3), || {
        let n = proxy.node(&zone_a)?;
        (!n.routable()).then(|| killed.elapsed())
    });
    // Let the load run on the fallback for a while before measuring it.
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();

    let live = [&primary, &replicas[1]];
    let before = gets(&live);
    let mut after_errors = Vec::new();
    for (k, v) in keys.iter() {
        let r = c.cmd(&["GET", k]);
        if r != Reply::bulk(v) {
            after_errors.push(format!("GET {k}: {r:?}"));
        }
    }
    let fallback = delta(&gets(&live), &before);

    println!("zone-a replica kill -9: out of rotation after {detected:?}");
    println!("read load across the kill: {}", report.summary());
    for e in report.errors.iter().take(5) {
        println!("  error at {:?}: {}", e.0, e.1);
    }
    println!(
        "after detection: 100 GETs, primary/zone-b replica served {fallback:?}, {} errors",
        after_errors.len()
    );
    assert!(
        detected.is_some(),
        "the killed zone-a replica is still in rotation 3 s later; view {:#?}",
        proxy.nodes()
    );
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert!(
        report.errors.is_empty(),
        "{} reads failed across the kill; first: {:?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(5)]
    );
    assert!(after_errors.is_empty(), "{after_errors:?}");
    assert_eq!(
        fallback,
        vec![0, 100],
        "with the zone-a replica dead, reads should go to the zone-b replica"
    );
}

/// A write in flight on the primary when it hands over is answered, not failed: the write
/// waits in the primary's `CLIENT PAUSE WRITE` while the primary is made a replica of the
/// other node; the health check sees the new role and drains the old primary's connections
/// (`NodeRt::drain_all`) instead of closing them, so the READONLY the write meets when the
/// pause ends is read, the write waits in the failover hold and is applied once, on the new
/// primary. Closing at once failed it with `node switched away from`.
#[test]
fn a_write_in_flight_when_its_primary_hands_over_is_answered_not_failed() {
    let (primary, replicas, proxy) = replica_pair("5s");
    let replica = &replicas[0];
    let mut c = Client::connect(&proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(10)));
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    testkit::wait_until(Duration::from_secs(5), "the replica to have k", || {
        replica.cmd(&["GET", "k"]) == Reply::bulk("1")
    });
    assert_eq!(replica.replica_of_no_one(), Reply::ok());
    // 300 ms: past the next health check (every 100 ms), which then drains the node for at
    // most 500 ms.
    assert_eq!(
        primary.cmd(&["CLIENT", "PAUSE", "300", "WRITE"]),
        Reply::ok()
    );
    c.send_raw(&testkit::encode_command(&["INCR", "k"]))
        .unwrap();
    // A write waiting in a pause counts as a blocked client (Redis 7.0).
    testkit::wait_until(
        Duration::from_millis(500),
        "the INCR to wait in the pause",
        || primary.info("clients").contains("blocked_clients:1"),
    );
    assert_eq!(primary.replica_of(replica), Reply::ok());
    let t = Instant::now();
    let r = c.read_reply().expect("a reply to the INCR");
    let refused = cmdstat(&primary, "incr", "rejected_calls");
    println!(
        "INCR in flight through the handover: {r:?} after {:?}; refused by the old primary: {refused}",
        t.elapsed()
    );
    assert_eq!(
        r,
        Reply::Int(2),
        "{}",
        proxy
            .log_lines(&["replica", "primary", "switched"])
            .join("\n")
    );
    assert_eq!(refused, 1, "the old primary refused it once (READONLY)");
    assert_eq!(
        replica.cmd(&["GET", "k"]),
        Reply::bulk("2"),
        "applied once, on the new primary"
    );
}

/// A write refused with READONLY by a primary that was demoted behind the proxy's back was
/// not applied: it waits in the failover hold, and goes to the node that took over (found
/// from the nodes' roles, see `ha::roles`), applied once. While no node of the shard is a
/// primary (both replicas), a write waits in the hold, reaches no node, and goes to the
/// first node that becomes a primary again.
#[test]
fn readonly_reply_is_held_not_failed() {
    let (primary, replicas) = replica_set(1);
    let replica = &replicas[0];
    // Slow checks, so that traffic meets the demotion before the health checks do.
    let extra = "  failover_hold: 5s\n  health_check:\n    interval: 1s\n    timeout: 200ms\n";
    let body = short_form(&primary.addr(), &[replica.addr()], extra);
    let proxy = HaProxy::start(&body);
    proxy.wait_up(&[primary.addr(), replica.addr()], Duration::from_secs(10));
    let mut c = Client::connect(&proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(10)));
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());

    // Swap the roles behind the proxy's back, then write at once.
    let rejected_before = cmdstat(&primary, "incr", "rejected_calls");
    assert_eq!(replica.replica_of_no_one(), Reply::ok());
    assert_eq!(primary.replica_of(replica), Reply::ok());
    let t = Instant::now();
    let first = c.cmd(&["INCR", "held_then_moved"]);
    let first_took = t.elapsed();
    let refused = cmdstat(&primary, "incr", "rejected_calls") - rejected_before;
    let landed = |k: &str| {
        [&primary, replica]
            .iter()
            .filter(|s| s.cmd(&["EXISTS", k]) == Reply::Int(1))
            .map(|s| s.addr())
            .collect::<Vec<_>>()
    };
    let on_new = replica.cmd(&["GET", "held_then_moved"]);
    println!(
        "write after the swap: {first:?} after {first_took:?}; INCRs the old primary refused: {refused}; value on the new primary: {on_new:?}"
    );
    assert_eq!(
        refused, 1,
        "the write should have reached the old primary once and got READONLY"
    );
    assert_eq!(
        first,
        Reply::Int(1),
        "the held write goes to the new primary"
    );
    assert!(
        first_took < Duration::from_millis(4500),
        "the held write should be released before failover_hold (5 s) ends: {first_took:?}"
    );
    assert_eq!(on_new, Reply::bulk("1"), "applied once, on the new primary");

    // No primary at all: the new primary follows the old one, which still follows it.
    assert_eq!(replica.replica_of(&primary), Reply::ok());
    let no_primary = poll_until(Duration::from_secs(5), || {
        let r = proxy.node(&replica.addr())?;
        (r.seen_role == "replica").then_some(())
    });
    assert!(no_primary.is_some(), "{:?}", proxy.nodes());
    let addr = proxy.addr();
    let (tx, rx) = mpsc::channel();
    let sent = Instant::now();
    let writer = thread::spawn(move || {
        let mut c = Client::connect(&addr);
        c.set_read_timeout(Some(Duration::from_secs(10)));
        let r = c.try_cmd(&["SET", "held_then_released", "2"]);
        let _ = tx.send((r.map_err(|e| e.to_string()), sent.elapsed()));
    });
    thread::sleep(Duration::from_secs(1));
    let view_while_held = proxy.node(&primary.addr());
    assert!(
        rx.try_recv().is_err(),
        "the second write was answered before any primary was back"
    );
    assert_eq!(
        landed("held_then_released"),
        Vec::<String>::new(),
        "the held write was applied while no node was a primary"
    );
    // The configured primary is a primary again.
    assert_eq!(primary.replica_of_no_one(), Reply::ok());
    let restored = sent.elapsed();
    let (second, second_took) = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("no reply to the held write; log:\n{}", proxy.log()));
    let _ = writer.join();
    let on_primary = primary.cmd(&["GET", "held_then_released"]);
    println!(
        "held write: {second:?} after {second_took:?} (a primary again {restored:?} after it was sent); on the configured primary: {on_primary:?}"
    );
    println!("proxy's view of the primary while the write was held: {view_while_held:?}");
    assert_eq!(second, Ok(Reply::ok()), "the held write should be released");
    assert!(
        second_took > restored && second_took < Duration::from_secs(5),
        "released {second_took:?} after it was sent, the primary was back at {restored:?}"
    );
    assert_eq!(on_primary, Reply::bulk("2"));
    testkit::wait_until(
        Duration::from_secs(5),
        "the replica to have the released write",
        || replica.cmd(&["GET", "held_then_released"]) == Reply::bulk("2"),
    );
}

/// Nodes named `localhost:<port>`: reads and writes work, and after the primary is killed
/// and restarted on the same port, the reconnect resolves the name again and writes work.
#[test]
fn dns_name_nodes() {
    let (mut primary, replicas) = replica_set(1);
    let replica = &replicas[0];
    let p_name = format!("localhost:{}", primary.port());
    let r_name = format!("localhost:{}", replica.port());
    let body = short_form(
        &p_name,
        std::slice::from_ref(&r_name),
        &format!("  read_policy: prefer-replica\n{FAST_CHECKS}"),
    );
    let proxy = HaProxy::start(&body);
    proxy.wait_up(&[p_name.clone(), r_name.clone()], Duration::from_secs(5));
    let keys = preload(&proxy.addr(), 100, &[replica]);
    let sets = cmdstat(&primary, "set", "calls");
    let before = gets(&[&primary, replica]);
    let mut c = Client::connect(&proxy.addr());
    for (k, v) in keys.iter() {
        assert_eq!(c.cmd(&["GET", k]), Reply::bulk(v));
    }
    let served = delta(&gets(&[&primary, replica]), &before);
    println!(
        "DNS-named nodes: primary took {sets} SETs; 100 GETs, primary/replica served {served:?}"
    );
    assert!(sets >= 100, "the writes did not reach {p_name}: {sets}");
    assert_eq!(served, vec![0, 100], "reads should go to {r_name}");

    primary.kill9();
    let killed = Instant::now();
    let down = poll_until(Duration::from_secs(3), || {
        let n = proxy.node(&p_name)?;
        (!n.routable()).then(|| killed.elapsed())
    });
    let while_down = c.cmd(&["SET", "during", "x"]);
    primary.restart();
    let restarted = Instant::now();
    let mut failed_after_restart = 0;
    let back = poll_until(Duration::from_secs(10), || {
        if c.cmd(&["SET", "after", "y"]) == Reply::ok() {
            return Some(restarted.elapsed());
        }
        failed_after_restart += 1;
        thread::sleep(Duration::from_millis(20));
        None
    });
    let mut errors = Vec::new();
    for i in 0..100 {
        let (k, v) = (format!("again_{i}"), i.to_string());
        let r = c.cmd(&["SET", &k, &v]);
        if r != Reply::ok() {
            errors.push(format!("SET {k}: {r:?}"));
        } else if primary.cmd(&["GET", &k]) != Reply::bulk(&v) {
            errors.push(format!("SET {k}: acknowledged but not on {p_name}"));
        }
    }
    println!("primary kill -9: out of rotation after {down:?}; a write meanwhile: {while_down:?}");
    println!(
        "restarted on the same port: writes work again {back:?} after the restart ({failed_after_restart} refused before); 100 more SETs, {} errors",
        errors.len()
    );
    assert!(down.is_some(), "the killed primary stayed in rotation");
    assert!(
        while_down.is_error(),
        "a write to a dead primary answered {while_down:?}"
    );
    assert!(
        back.is_some(),
        "writes never worked again after the restart; view {:#?}\nlog:\n{}",
        proxy.nodes(),
        proxy.log()
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(primary.cmd(&["GET", "after"]), Reply::bulk("y"));
}

/// A `primary:`/`replicas:` pool follows a primary changed outside rampart, as a proxy that
/// checks roles would: Redis' own `FAILOVER`, run on the primary, hands the writes to the
/// replica; writes through rampart go on with no error and none lost, and a reload after it
/// keeps writing to the new primary (the file still names the old one).
///
/// The pool timeout is 3 s: FAILOVER pauses writes on the primary until the replica has taken
/// over, and a write sent then waits there, 0.04 to 0.94 s in three tries against Redis 7.0.15
/// directly, before its READONLY; on a loaded machine that came past the default 1 s.
#[test]
fn a_failover_made_outside_rampart_is_followed_without_sentinel() {
    let (primary, replicas, proxy) = replica_pair_with(FAILOVER_LINES);
    let replica = &replicas[0];
    let load = WriteLoad::start(&proxy.addr(), 2, Duration::from_secs(10));
    assert!(load::progressed(
        || load.acked(),
        200,
        Duration::from_secs(5)
    ));
    // FAILOVER (Redis 6.2): the primary waits for its replica to catch up, promotes it and
    // becomes its replica.
    assert_eq!(primary.cmd(&["FAILOVER"]), Reply::ok());
    let swapped = poll_until(Duration::from_secs(10), || {
        (replica.role() == "master" && primary.role() == "slave").then_some(())
    });
    assert!(swapped.is_some(), "FAILOVER did not complete");
    assert!(
        load::progressed(|| load.acked(), 500, Duration::from_secs(10)),
        "writes did not resume after the failover; log:\n{}",
        proxy.log()
    );
    // A reload that changes another key (the pool is rebuilt): the file still names the old
    // primary.
    reload_to(
        &proxy,
        &proxy.yaml.replace("timeout: 3000", "timeout: 2900"),
    );
    assert!(
        load::progressed(|| load.acked(), 500, Duration::from_secs(10)),
        "writes did not go on after the reload"
    );
    let report = load.stop();
    let missing = missing_writes(replica, &report.acks);
    let switches = proxy.log_lines(&["primary switched"]).len();
    println!(
        "FAILOVER outside rampart: {} writes acknowledged, {} errors, {} missing on the new primary, longest pause {:?}; primary switches logged: {switches}",
        report.acks.len(),
        report.errors.len(),
        missing.len(),
        report.longest_pause().0
    );
    assert!(
        report.errors.is_empty(),
        "{:?}",
        &report.errors[..report.errors.len().min(5)]
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost",
        missing.len()
    );
    // One switch: the reload kept the primary it had, rather than going back to the file's
    // (then following the roles again).
    assert_eq!(switches, 1, "log:\n{}", proxy.log());
}

/// The primary pointed at a node outside the shard while a replica of the shard is detached
/// (it answers as a primary, holding a copy nobody replicates): the shard's primary does not
/// move to that copy. Writes wait in the hold and fail, applied nowhere, and the log says
/// why once.
#[test]
fn a_detached_replica_is_not_taken_for_a_primary_the_old_one_does_not_follow() {
    let (primary, replicas, proxy) = replica_pair("2s");
    let replica = &replicas[0];
    let outside = RedisServer::start();
    let mut c = Client::connect(&proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(10)));
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());
    assert_eq!(replica.replica_of_no_one(), Reply::ok());
    assert_eq!(primary.replica_of(&outside), Reply::ok());
    let seen = poll_until(Duration::from_secs(5), || {
        let p = proxy.node(&primary.addr())?;
        let r = proxy.node(&replica.addr())?;
        (p.seen_role == "replica" && r.seen_role == "primary").then_some(())
    });
    assert!(seen.is_some(), "{:?}", proxy.nodes());
    // Several turns of the follower (every 100 ms here).
    thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let write = c.cmd(&["SET", "after", "1"]);
    println!(
        "write with the primary following an outside node: {write:?} after {:?}",
        t.elapsed()
    );
    assert!(write.is_error(), "the write was taken: {write:?}");
    assert_eq!(replica.cmd(&["EXISTS", "after"]), Reply::Int(0));
    assert_eq!(outside.cmd(&["EXISTS", "after"]), Reply::Int(0));
    assert!(
        proxy.log_lines(&["primary switched"]).is_empty(),
        "{}",
        proxy.log()
    );
    assert_eq!(
        proxy.log_lines(&["the primary is not moved"]).len(),
        1,
        "{}",
        proxy.log()
    );
}

/// A blocking command waiting for a primary (none of the shard's nodes is one) across a
/// reload that changes `redis_db`: once a primary appears, found by the reloaded pool, the
/// command runs there in the new database, where a push through rampart wakes it.
#[test]
fn a_blocking_command_waiting_for_a_primary_follows_a_reload() {
    let (primary, replicas, proxy) = replica_pair("10s");
    let replica = &replicas[0];
    // No primary: each node follows the other.
    assert_eq!(primary.replica_of(replica), Reply::ok());
    let none = poll_until(Duration::from_secs(5), || {
        let p = proxy.node(&primary.addr())?;
        (p.seen_role == "replica").then_some(())
    });
    assert!(none.is_some(), "{:?}", proxy.nodes());
    let addr = proxy.addr();
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let mut c = Client::connect(&addr);
        c.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = tx.send(c.try_cmd(&["BLPOP", "q", "0"]).map_err(|e| e.to_string()));
    });
    thread::sleep(Duration::from_millis(300));
    reload_adding(&proxy, "redis_db: 1");
    // The replica becomes the primary; the old primary already follows it.
    assert_eq!(replica.replica_of_no_one(), Reply::ok());
    let moved = poll_until(Duration::from_secs(5), || {
        let r = proxy.node(&replica.addr())?;
        (r.role == "primary").then_some(())
    });
    assert!(moved.is_some(), "{:?}\n{}", proxy.nodes(), proxy.log());
    // The BLPOP is on the new primary by now, blocked in database 1.
    let blocked = poll_until(Duration::from_secs(5), || {
        (replica.info("clients").contains("blocked_clients:1")).then_some(())
    });
    assert!(blocked.is_some(), "the BLPOP did not reach the new primary");
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["RPUSH", "q", "x"]), Reply::Int(1));
    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("the BLPOP was not woken by a push in database 1"));
    let _ = waiter.join();
    assert_eq!(
        got,
        Ok(Reply::Array(Some(vec![Reply::bulk("q"), Reply::bulk("x")])))
    );
    assert_eq!(
        replica.cmd(&["EXISTS", "q"]),
        Reply::Int(0),
        "database 0 got the push"
    );
}

/// A `shards:` pool of two replicated shards, writes on both: `FAILOVER` on one shard's
/// primary moves that shard's primary only. No write fails, none acknowledged is lost, the
/// other shard keeps its primary, and the log names the switch of the shard that moved. The
/// pool timeout is [`FAILOVER_LINES`]' (see the test above).
#[test]
fn a_failover_outside_rampart_moves_only_its_own_shard_of_a_sharded_pool() {
    let (left, left_replicas) = replica_set(1);
    let (right, right_replicas) = replica_set(1);
    left_replicas[0].wait_replication_up(Duration::from_secs(10));
    right_replicas[0].wait_replication_up(Duration::from_secs(10));
    let body = format!(
        "  shards:\n    - name: left\n      primary: {}\n      replicas: [{}]\n    - name: right\n      primary: {}\n      replicas: [{}]\n{FAST_CHECKS}{FAILOVER_LINES}",
        left.addr(),
        left_replicas[0].addr(),
        right.addr(),
        right_replicas[0].addr()
    );
    let proxy = HaProxy::start(&body);
    let all = [
        left.addr(),
        left_replicas[0].addr(),
        right.addr(),
        right_replicas[0].addr(),
    ];
    proxy.wait_up(&all, Duration::from_secs(5));
    let load = WriteLoad::start(&proxy.addr(), 2, Duration::from_secs(10));
    assert!(load::progressed(
        || load.acked(),
        200,
        Duration::from_secs(5)
    ));
    assert_eq!(right.cmd(&["FAILOVER"]), Reply::ok());
    let swapped = poll_until(Duration::from_secs(10), || {
        (right_replicas[0].role() == "master" && right.role() == "slave").then_some(())
    });
    assert!(swapped.is_some(), "FAILOVER did not complete");
    let moved = poll_until(Duration::from_secs(5), || {
        let n = proxy.node(&right_replicas[0].addr())?;
        (n.role == "primary").then_some(())
    });
    assert!(moved.is_some(), "{:#?}\n{}", proxy.nodes(), proxy.log());
    assert!(
        load::progressed(|| load.acked(), 500, Duration::from_secs(10)),
        "writes did not resume after the failover; log:\n{}",
        proxy.log()
    );
    let report = load.stop();
    // Each key lives on one shard: it is missing only when neither shard's primary has it.
    let on_right = missing_writes(&right_replicas[0], &report.acks);
    let lost: Vec<_> = on_right
        .into_iter()
        .filter(|a| left.cmd(&["GET", &a.key]) != Reply::bulk(&a.value))
        .collect();
    let switches = proxy.log_lines(&["primary switched"]);
    println!(
        "FAILOVER of one shard of two: {} writes acknowledged, {} errors, {} lost, longest pause {:?}; switches logged: {switches:?}",
        report.acks.len(),
        report.errors.len(),
        lost.len(),
        report.longest_pause().0
    );
    assert!(
        report.errors.is_empty(),
        "{:?}",
        &report.errors[..report.errors.len().min(5)]
    );
    assert!(lost.is_empty(), "{} acknowledged writes lost", lost.len());
    let left_view = proxy
        .node(&left.addr())
        .expect("the left primary is listed");
    assert_eq!(left_view.role, "primary", "{:#?}", proxy.nodes());
    assert_eq!(switches.len(), 1, "log:\n{}", proxy.log());
    assert!(switches[0].contains("right"), "{switches:?}");
}
