//! The durable write spool: while a shard has no primary, listed writes are acknowledged
//! once on disk and replayed in order when it returns, before any newer write of the shard;
//! rampart killed with kill -9 while spooling or replaying loses no acknowledged entry.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha::{replica_set, SentinelSetup, FAST_CHECKS, POOL};
use testkit::{free_port, poll_until, Client, Proxy, RedisServer, Reply};

/// A rampart on `port` over `primary` and `replica`, spooling into `spool`, with
/// `failover_hold: hold`.
fn start(
    port: u16,
    primary: &RedisServer,
    replica: &RedisServer,
    spool: &std::path::Path,
    hold: &str,
) -> Proxy {
    start_with(port, &yaml(port, primary, replica, spool, hold, ""))
}

/// The configuration of [`start`], with the extra pool lines `extra`.
fn yaml(
    port: u16,
    primary: &RedisServer,
    replica: &RedisServer,
    spool: &std::path::Path,
    hold: &str,
    extra: &str,
) -> String {
    format!(
        "{POOL}:\n  listen: 127.0.0.1:{port}\n  redis: true\n  primary: {}\n  replicas:\n    - {}\n{FAST_CHECKS}  failover_hold: {hold}\n  spool_dir: {}\n  spool_commands: [LPUSH, SADD, SET]\n{extra}",
        primary.addr(),
        replica.addr(),
        spool.display()
    )
}

/// A rampart on `port` with the configuration `yaml` (a pool on that port).
fn start_with(port: u16, yaml: &str) -> Proxy {
    Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("spool.yml", yaml)
        .args(["-c", "{dir}/spool.yml", "--workers", "2", "--no-admin"])
        .args(["-a".to_string(), "127.0.0.1".to_string()])
        .args(["-s".to_string(), free_port().to_string()])
        .env("RAMPART_LOG", "info")
        .wait_port(port)
        .start()
}

/// The elements of list `key` on `server`, oldest push first.
fn pushed(server: &RedisServer, key: &str) -> Vec<String> {
    let mut items: Vec<String> = match server.cmd(&["LRANGE", key, "0", "-1"]) {
        Reply::Array(Some(v)) => v
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect(),
        other => panic!("LRANGE: {other:?}"),
    };
    items.reverse();
    items
}

/// Whether the proxy routes writes to `addr` (its INFO shows it up as the primary).
fn primary_routable(port: u16, addr: &str) -> bool {
    primary_routable_as(port, addr, None)
}

/// [`primary_routable`] for a client that gives `password` first (a pool with `redis_auth`).
fn primary_routable_as(port: u16, addr: &str, password: Option<&str>) -> bool {
    let Some(mut c) = client_as(port, password) else {
        return false;
    };
    match c.try_cmd(&["INFO", "pools"]) {
        Ok(Reply::Bulk(Some(b))) => String::from_utf8_lossy(&b)
            .lines()
            .any(|l| l.contains(addr) && l.contains("role=primary") && l.contains("up=1")),
        _ => false,
    }
}

#[test]
fn writes_spooled_while_the_primary_is_down_are_replayed_in_order_before_newer_ones() {
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let proxy = start(port, &primary, &replicas[0], dir.path(), "5s");
    let addr = format!("127.0.0.1:{port}");
    assert!(
        poll_until(Duration::from_secs(10), || primary_routable(
            port,
            &primary.addr()
        )
        .then_some(()))
        .is_some(),
        "primary never routable; log:\n{}",
        proxy.stderr()
    );
    let mut c = Client::connect(&addr);
    assert_eq!(c.cmd(&["LPUSH", "q", "a0"]), Reply::Int(1));
    primary.stop();
    assert!(
        poll_until(Duration::from_secs(10), || (!primary_routable(
            port,
            &primary.addr()
        ))
        .then_some(()))
        .is_some(),
        "the proxy never saw the primary down"
    );
    // Acknowledged from the spool, with the documented replies.
    for i in 1..=50 {
        let v = format!("a{i}");
        assert_eq!(c.cmd(&["LPUSH", "q", &v]), Reply::Int(1), "LPUSH {v}");
    }
    assert_eq!(c.cmd(&["SADD", "s", "x", "y", "x"]), Reply::Int(2));
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    let refused = c.cmd(&["INCR", "n"]);
    assert!(
        matches!(&refused, Reply::Error(e) if e.contains("has no primary")),
        "INCR is not spooled: {refused:?}"
    );
    primary.cont();
    // Right after the primary returns, a write is still spooled (the proxy has not seen it
    // up yet: the documented reply) or waits behind the spool's replay (the server's reply):
    // either way it lands after every spooled one.
    let after = c.cmd(&["LPUSH", "q", "after"]);
    assert!(
        after == Reply::Int(1) || after == Reply::Int(52),
        "{after:?}"
    );
    assert!(
        poll_until(Duration::from_secs(10), || primary_routable(
            port,
            &primary.addr()
        )
        .then_some(()))
        .is_some(),
        "the primary never came back"
    );
    let later = c.cmd(&["LPUSH", "q", "later"]);
    assert_eq!(
        later,
        Reply::Int(53),
        "the server's own reply; log:\n{}",
        proxy.stderr()
    );
    let expected: Vec<String> = (0..=50)
        .map(|i| format!("a{i}"))
        .chain(["after".to_string(), "later".to_string()])
        .collect();
    assert_eq!(
        pushed(&primary, "q"),
        expected,
        "replayed in order, before newer writes"
    );
    assert_eq!(primary.cmd(&["SCARD", "s"]), Reply::Int(2));
    assert_eq!(primary.cmd(&["GET", "k"]), Reply::bulk("v"));
    let lines = poll_until(Duration::from_secs(5), || {
        let log = proxy.stderr();
        (log.contains("replaying 53 entries") && log.contains("replay done")).then_some(())
    });
    assert!(lines.is_some(), "progress lines; log:\n{}", proxy.stderr());
    let info = match c.cmd(&["INFO", "pools"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO: {other:?}"),
    };
    let spool_line = info
        .lines()
        .find(|l| l.starts_with(&format!("spool_{POOL}_{POOL}:")))
        .unwrap_or_else(|| panic!("no spool line in INFO:\n{info}"));
    for field in ["entries=0,", "appended=53,", "replayed=53,", "stopped=0,"] {
        assert!(spool_line.contains(field), "{field} in {spool_line}");
    }
}

/// Writers push unique values; rampart is killed with kill -9 at random moments, while the
/// primary is down (spooling) and while it is up (replaying, then writing through), and a few
/// times the spool's active segment gets a torn record appended as a power cut could leave.
/// At the end, with the primary up, every acknowledged value is in the list, the copies beyond
/// the first (entries replayed again after a crash) are at most as many as the kills, and
/// nothing else is in it.
#[test]
fn kill_9_while_spooling_and_replaying_loses_no_acknowledged_entry() {
    let kills: usize = std::env::var("SPOOL_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let mut down = false;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..kills {
        // Primary down for two rounds in five.
        let want_down = round % 5 < 2;
        if want_down != down {
            if want_down {
                primary.stop();
            } else {
                primary.cont();
            }
            down = want_down;
        }
        let mut proxy = start(port, &primary, &replicas[0], dir.path(), "200ms");
        if round % 10 == 8 {
            let log = proxy.stderr();
            assert!(
                log.contains("a torn tail of"),
                "the torn record was not cut; log:\n{log}"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (stop, acked, addr) = (Arc::clone(&stop), Arc::clone(&acked), addr.clone());
                std::thread::spawn(move || {
                    let Ok(mut c) = Client::try_connect(&addr) else {
                        return;
                    };
                    c.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let v = format!("r{round}w{w}n{n}");
                        n += 1;
                        match c.try_cmd(&["LPUSH", "q", &v]) {
                            Ok(Reply::Int(_)) => acked.lock().expect("lock").push(v),
                            Ok(_) => {}
                            Err(_) => return,
                        }
                        // Paced: replay takes one fsync per entry, so unpaced writers would
                        // spool faster than it drains and the test would measure the disk.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50 + rand(400)));
        proxy.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.join();
        }
        if round % 10 == 7 {
            tear_the_tail(dir.path(), rand(40) as usize + 1);
        }
    }
    if down {
        primary.cont();
    }
    let proxy = start(port, &primary, &replicas[0], dir.path(), "200ms");
    let mut c = Client::connect(&addr);
    assert!(matches!(c.cmd(&["LPUSH", "q", "last"]), Reply::Int(_)));
    // Spooled or sent after the spool's replay: once it is on the primary, so is the rest.
    let drained = poll_until(Duration::from_secs(120), || {
        pushed(&primary, "q")
            .iter()
            .any(|v| v == "last")
            .then_some(())
    });
    assert!(
        drained.is_some(),
        "the spool never drained; log:\n{}",
        proxy.stderr()
    );
    let items = pushed(&primary, "q");
    let acked = acked.lock().expect("lock").clone();
    let mut count = std::collections::HashMap::<&str, usize>::new();
    for i in &items {
        *count.entry(i.as_str()).or_default() += 1;
    }
    let lost: Vec<&String> = acked
        .iter()
        .filter(|v| !count.contains_key(v.as_str()))
        .collect();
    let doubled = count.values().filter(|n| **n == 2).count();
    // Each crash replays at most the one entry in flight (its checkpoint was not written):
    // one more copy per kill at most. A kill that lands in the next instance's replay of the
    // same entry makes it a third copy, so the bound is on all the extra copies together.
    let extra: usize = count.values().map(|n| n - 1).sum();
    let most = count.values().copied().max().unwrap_or(0);
    let strange: Vec<&&str> = count
        .keys()
        .filter(|k| !(k.starts_with('r') && k.contains('w') || **k == "last"))
        .collect();
    println!(
        "{kills} kill -9 in {:?}: {} acknowledged, {} in the list, {} lost, {doubled} applied twice, {extra} extra copies, at most {most} of one value",
        started.elapsed(),
        acked.len(),
        items.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged but lost: {:?}",
        &lost[..lost.len().min(10)]
    );
    assert!(extra <= kills, "{extra} extra copies for {kills} kills");
    assert!(strange.is_empty(), "values nobody wrote: {strange:?}");
}

/// Append `n` bytes of a record that never finished to the newest segment of every shard
/// spool under `root` (what a power cut mid-write leaves).
fn tear_the_tail(root: &std::path::Path, n: usize) {
    for pool in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for shard in std::fs::read_dir(pool.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let mut segs: Vec<_> = std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect();
            segs.sort();
            if let Some(last) = segs.last() {
                let mut torn = 64u32.to_le_bytes().to_vec();
                torn.extend(std::iter::repeat_n(0xabu8, n));
                let mut bytes = std::fs::read(last).expect("read segment");
                bytes.extend(&torn);
                std::fs::write(last, bytes).expect("write segment");
            }
        }
    }
}

/// Waits until the proxy sees `primary` down.
fn wait_down(port: u16, primary: &RedisServer) {
    assert!(
        poll_until(Duration::from_secs(10), || (!primary_routable(
            port,
            &primary.addr()
        ))
        .then_some(()))
        .is_some(),
        "the proxy never saw the primary down"
    );
}

/// Past `spool_max_bytes` a write is answered with an error naming the spool, and nothing
/// of it is kept: what was acknowledged before is replayed, the refused write is not.
#[test]
fn a_full_spool_answers_an_error_naming_it() {
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let proxy = start_with(
        port,
        &yaml(
            port,
            &primary,
            &replicas[0],
            dir.path(),
            "100ms",
            "  spool_max_bytes: 200\n",
        ),
    );
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    primary.stop();
    wait_down(port, &primary);
    let mut acked = Vec::new();
    let refused = loop {
        let v = format!("v{}", acked.len());
        match c.cmd(&["LPUSH", "q", &v]) {
            Reply::Int(1) => acked.push(v),
            other => break other,
        }
        assert!(acked.len() < 100, "200 bytes never filled");
    };
    let Reply::Error(e) = &refused else {
        panic!("{refused:?}")
    };
    assert!(
        e.contains("could not be spooled: spool ") && e.contains("is full"),
        "{e}"
    );
    assert!(
        e.contains(&dir.path().display().to_string()),
        "names the spool: {e}"
    );
    primary.cont();
    let replayed = poll_until(Duration::from_secs(10), || {
        (pushed(&primary, "q") == acked).then_some(())
    });
    assert!(
        replayed.is_some(),
        "{:?} replayed, {acked:?} acknowledged; log:\n{}",
        pushed(&primary, "q"),
        proxy.stderr()
    );
}

/// With the primary of `primary`/`replica` frozen, ten writes (`v0`..`v9`) go to the spool
/// in `dir`; then the file gets the pool lines `extra` and rampart reloads it (SIGHUP).
/// Returns the proxy and the client that wrote.
fn spooled_then_reloaded(
    primary: &RedisServer,
    replica: &RedisServer,
    dir: &std::path::Path,
    extra: &str,
) -> (Proxy, Client) {
    let port = free_port();
    let proxy = start(port, primary, replica, dir, "100ms");
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    primary.stop();
    wait_down(port, primary);
    for i in 0..10 {
        assert_eq!(c.cmd(&["LPUSH", "q", &format!("v{i}")]), Reply::Int(1));
    }
    let changed = yaml(port, primary, replica, dir, "100ms", extra);
    std::fs::write(proxy.dir().join("spool.yml"), changed).expect("write config");
    proxy.signal("HUP");
    let reloaded = poll_until(Duration::from_secs(10), || {
        proxy
            .stderr()
            .lines()
            .any(|l| l.contains("reload: "))
            .then_some(())
    });
    assert!(reloaded.is_some(), "no reload; log:\n{}", proxy.stderr());
    (proxy, c)
}

/// The writes `v0`..`v{n-1}` reach `primary` in order once it is back.
fn assert_replayed(primary: &RedisServer, n: usize, proxy: &Proxy) {
    primary.cont();
    let want: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    let replayed = poll_until(Duration::from_secs(10), || {
        (pushed(primary, "q") == want).then_some(())
    });
    assert!(
        replayed.is_some(),
        "{:?} replayed; log:\n{}",
        pushed(primary, "q"),
        proxy.stderr()
    );
}

/// A reload while writes wait in the spool keeps the spool (same directory): they are
/// replayed after it as before.
#[test]
fn the_spool_survives_a_reload() {
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (proxy, mut c) =
        spooled_then_reloaded(&primary, &replicas[0], dir.path(), "  timeout: 2000\n");
    for i in 10..15 {
        assert_eq!(c.cmd(&["LPUSH", "q", &format!("v{i}")]), Reply::Int(1));
    }
    assert_replayed(&primary, 15, &proxy);
}

/// A reload that lowers `spool_max_bytes` bounds the next append of the spool it keeps:
/// the writes waiting stay (and are replayed), a new one over the lower bound is refused as
/// full. Before, the reload said the bound changed and the spool kept the old one.
#[test]
fn a_reload_lowers_the_bound_of_a_spool_it_keeps() {
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (proxy, mut c) = spooled_then_reloaded(
        &primary,
        &replicas[0],
        dir.path(),
        "  spool_max_bytes: 10\n",
    );
    let refused = c.cmd(&["LPUSH", "q", "over"]);
    assert!(
        matches!(&refused, Reply::Error(e) if e.contains("is full") && e.contains("of 10 bytes")),
        "{refused:?}"
    );
    assert_replayed(&primary, 10, &proxy);
}

/// In a Sentinel pool, writes that wait past `failover_hold` while Sentinel promotes a new
/// primary are spooled, and replayed in order to the new primary once it is applied.
#[test]
fn sentinel_failover_writes_past_the_hold_are_spooled_and_replayed_to_the_new_primary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = SentinelSetup::start(&format!(
        "  failover_hold: 200ms\n  spool_dir: {}\n  spool_commands: [LPUSH]\n",
        dir.path().display()
    ));
    let mut c = Client::connect(&s.proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut acked = Vec::new();
    for i in 0..20 {
        let v = format!("before{i}");
        assert_eq!(c.cmd(&["LPUSH", "q", &v]), Reply::Int(i + 1));
        acked.push(v);
    }
    assert_eq!(s.primary.cmd(&["WAIT", "2", "2000"]), Reply::Int(2));
    s.primary.kill9();
    let killed = Instant::now();
    let mut spooled = 0;
    while killed.elapsed() < Duration::from_millis(1500) {
        let v = format!("during{}", acked.len());
        match c.try_cmd(&["LPUSH", "q", &v]) {
            Ok(Reply::Int(1)) => {
                spooled += 1;
                acked.push(v);
            }
            Ok(Reply::Int(_)) => acked.push(v),
            Ok(_) => {}
            Err(_) => c = Client::connect(&s.proxy.addr()),
        }
    }
    let (_, port) = s.wait_switch(killed, Duration::from_secs(30));
    assert!(spooled > 0, "nothing was spooled during the failover");
    let new_primary = s.node_on(port);
    let replayed = poll_until(Duration::from_secs(20), || {
        (pushed(new_primary, "q") == acked).then_some(())
    });
    assert!(
        replayed.is_some(),
        "{} spooled; on the new primary {:?}, acknowledged {:?}; log:\n{}",
        spooled,
        pushed(new_primary, "q"),
        acked,
        s.proxy.log()
    );
    println!("{spooled} writes spooled during the failover, all replayed to the new primary");

    // The old primary comes back (empty: the test servers keep no data) and says master
    // until Sentinel turns it into a replica: nothing is replayed to it again, no write
    // reaches it, and the new primary holds every acknowledged write once.
    s.primary.restart();
    for i in 0..20 {
        let v = format!("back{i}");
        assert_eq!(
            c.cmd(&["LPUSH", "q", &v]),
            Reply::Int(acked.len() as i64 + 1),
            "LPUSH {v}"
        );
        acked.push(v);
    }
    assert!(
        poll_until(Duration::from_secs(30), || (s.primary.role() == "slave")
            .then_some(()))
        .is_some(),
        "Sentinel never turned the old primary into a replica:{}",
        s.failover_log()
    );
    let new_primary = s.node_on(port);
    assert_eq!(pushed(new_primary, "q"), acked, "the new primary's list");
    assert!(
        poll_until(Duration::from_secs(10), || (pushed(&s.primary, "q")
            == acked)
            .then_some(()))
        .is_some(),
        "the old primary, now a replica, holds {:?}",
        pushed(&s.primary, "q")
    );
}

/// The spool's entries waiting for replay, from INFO (`spool_<pool>_<pool>:entries=N,...`).
fn spool_entries(port: u16) -> Option<u64> {
    spool_entries_as(port, None)
}

/// A client of the proxy on `port`, authenticated with `password` when given.
fn client_as(port: u16, password: Option<&str>) -> Option<Client> {
    let mut c = Client::try_connect(&format!("127.0.0.1:{port}")).ok()?;
    if let Some(p) = password {
        if c.try_cmd(&["AUTH", p]).ok()? != Reply::ok() {
            return None;
        }
    }
    Some(c)
}

/// [`spool_entries`] for a client that gives `password` first.
fn spool_entries_as(port: u16, password: Option<&str>) -> Option<u64> {
    let mut c = client_as(port, password)?;
    let Ok(Reply::Bulk(Some(b))) = c.try_cmd(&["INFO", "pools"]) else {
        return None;
    };
    let text = String::from_utf8_lossy(&b).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("spool_{POOL}_{POOL}:")))?;
    line.split([':', ','])
        .find_map(|f| f.strip_prefix("entries="))?
        .parse()
        .ok()
}

/// With `min_replica_acks: 1`, a replayed entry leaves the spool only once the replica has
/// it: while the replica is frozen the replay waits, and it finishes once the replica is back.
#[test]
fn with_min_replica_acks_replayed_entries_leave_only_once_replicated() {
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let extra = "  min_replica_acks: 1\n  min_replica_acks_timeout: 100ms\n";
    let proxy = start_with(
        port,
        &yaml(port, &primary, &replicas[0], dir.path(), "100ms", extra),
    );
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    primary.stop();
    wait_down(port, &primary);
    for i in 0..5 {
        assert_eq!(c.cmd(&["LPUSH", "q", &format!("v{i}")]), Reply::Int(1));
    }
    replicas[0].stop();
    primary.cont();
    let started = poll_until(Duration::from_secs(10), || {
        pushed(&primary, "q")
            .first()
            .is_some_and(|v| v == "v0")
            .then_some(())
    });
    assert!(
        started.is_some(),
        "replay never began; log:\n{}",
        proxy.stderr()
    );
    // Replayed on the primary but on no replica: the spool must keep the entry.
    let drained_early = poll_until(Duration::from_secs(1), || {
        (spool_entries(port) == Some(0)).then_some(())
    });
    assert!(
        drained_early.is_none(),
        "entries left the spool while the replica was frozen"
    );
    assert!(
        proxy.stderr().contains("not yet on 1 replicas"),
        "the wait is logged; log:\n{}",
        proxy.stderr()
    );
    replicas[0].cont();
    let drained = poll_until(Duration::from_secs(10), || {
        (spool_entries(port) == Some(0)).then_some(())
    });
    assert!(drained.is_some(), "never drained; log:\n{}", proxy.stderr());
    let want: Vec<String> = (0..5).map(|i| format!("v{i}")).collect();
    assert_eq!(pushed(&replicas[0], "q"), want, "on the replica");
}

/// A command on a connection of its own (a blocking write, WATCH) does not overtake the
/// shard's spooled writes: it waits while the spool holds entries to replay (here kept there
/// by `min_replica_acks` while the replica is frozen), at most `failover_hold` or the pool
/// `timeout` (then an error saying why, nothing sent), and runs once the spool is empty.
#[test]
fn blocking_writes_and_watch_wait_for_the_spool_to_be_replayed() {
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let extra = "  min_replica_acks: 1\n  min_replica_acks_timeout: 100ms\n  timeout: 500\n";
    let proxy = start_with(
        port,
        &yaml(port, &primary, &replicas[0], dir.path(), "100ms", extra),
    );
    let addr = format!("127.0.0.1:{port}");
    let mut c = Client::connect(&addr);
    primary.stop();
    wait_down(port, &primary);
    for i in 0..5 {
        assert_eq!(c.cmd(&["LPUSH", "q", &format!("v{i}")]), Reply::Int(1));
    }
    replicas[0].stop();
    primary.cont();
    let started = poll_until(Duration::from_secs(10), || {
        (!pushed(&primary, "q").is_empty()).then_some(())
    });
    assert!(
        started.is_some(),
        "replay never began; log:\n{}",
        proxy.stderr()
    );
    // The replay is stuck on its first entry: WATCH waits out the bound and is refused.
    let t0 = Instant::now();
    let watch = c.cmd(&["WATCH", "q"]);
    let waited = t0.elapsed();
    assert_eq!(
        watch,
        Reply::Error(
            "ERR rampart: shard 'alpha' is still replaying its spool; the command was not sent \
             (waited 500ms)"
                .into()
        ),
        "after {waited:?}"
    );
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert_eq!(
        pushed(&primary, "q"),
        ["v0"],
        "still stuck on the first entry"
    );
    // A blocking move sent now waits for the whole spool: it pops the newest push, not the
    // only element the primary had when it was sent.
    let blocked = std::thread::spawn(move || {
        let mut b = Client::connect(&addr);
        b.cmd(&["BLMOVE", "q", "dst", "LEFT", "LEFT", "5"])
    });
    std::thread::sleep(Duration::from_millis(100));
    replicas[0].cont();
    let moved = blocked
        .join()
        .unwrap_or_else(|_| panic!("the blocking client panicked"));
    assert_eq!(moved, Reply::bulk("v4"), "log:\n{}", proxy.stderr());
    assert_eq!(pushed(&primary, "q"), ["v0", "v1", "v2", "v3"]);
    assert_eq!(spool_entries(port), Some(0));
}

/// CLIENT PAUSE WRITE of the pool holds the spool's replay too: a primary that returns while
/// writes are paused gets none of the spooled writes until the pause ends (an operator
/// pausing writes for a failover sees its offset stand still), then all of them, in order.
#[test]
fn client_pause_write_holds_the_spool_replay_until_unpause() {
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let proxy = start(port, &primary, &replicas[0], dir.path(), "100ms");
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    primary.stop();
    wait_down(port, &primary);
    for i in 0..3 {
        assert_eq!(c.cmd(&["LPUSH", "q", &format!("v{i}")]), Reply::Int(1));
    }
    assert_eq!(spool_entries(port), Some(3));
    assert_eq!(c.cmd(&["CLIENT", "PAUSE", "60000", "WRITE"]), Reply::ok());
    primary.cont();
    assert!(
        poll_until(Duration::from_secs(10), || primary_routable(
            port,
            &primary.addr()
        )
        .then_some(()))
        .is_some(),
        "the primary never came back"
    );
    // A few replay ticks with the primary routable: nothing is sent while paused.
    let replayed_early = poll_until(Duration::from_secs(1), || {
        (!pushed(&primary, "q").is_empty()).then_some(())
    });
    assert!(
        replayed_early.is_none(),
        "replayed during the pause: {:?}; log:\n{}",
        pushed(&primary, "q"),
        proxy.stderr()
    );
    assert_eq!(spool_entries(port), Some(3));
    assert_eq!(c.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    assert!(
        poll_until(Duration::from_secs(10), || (spool_entries(port) == Some(0))
            .then_some(()))
        .is_some(),
        "the spool was not replayed after the pause; log:\n{}",
        proxy.stderr()
    );
    assert_eq!(pushed(&primary, "q"), ["v0", "v1", "v2"]);
}

/// A transaction while the primary is down goes to the spool whole or not at all: one made
/// only of commands the pool spools is one entry, answered with its replies; one with any
/// other command (INCR) is refused with an error that says why it was not spooled, and
/// nothing of it reaches the primary when it returns.
#[test]
fn a_transaction_is_spooled_whole_or_refused_saying_why() {
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _proxy = start(port, &primary, &replicas[0], dir.path(), "100ms");
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    c.set_read_timeout(Some(Duration::from_secs(10)));
    primary.stop();
    wait_down(port, &primary);
    let tx = |c: &mut Client, middle: &[&str]| {
        let mut cmds = vec![vec!["MULTI"], vec!["LPUSH", "q", "a"], middle.to_vec()];
        cmds.push(vec!["EXEC"]);
        c.pipeline(&cmds).pop().expect("EXEC's reply")
    };
    let refused = tx(&mut c, &["INCR", "n"]);
    assert!(
        matches!(&refused, Reply::Error(e) if e.contains("spool_commands") && e.contains("nothing of it was sent")),
        "{refused:?}"
    );
    assert_eq!(spool_entries(port), Some(0));
    let spooled = tx(&mut c, &["SADD", "s", "x"]);
    assert_eq!(
        spooled,
        Reply::Array(Some(vec![Reply::Int(1), Reply::Int(1)]))
    );
    assert_eq!(spool_entries(port), Some(1));
    primary.cont();
    let drained = poll_until(Duration::from_secs(10), || {
        (spool_entries(port) == Some(0)).then_some(())
    });
    assert!(drained.is_some(), "the spool was not replayed");
    assert_eq!(pushed(&primary, "q"), ["a"]);
    assert_eq!(primary.cmd(&["EXISTS", "n"]), Reply::Int(0));
}

/// A primary that is back but refuses writes for a while (`NOREPLICAS`: its
/// `min-replicas-to-write` replica is still away; `OOM` and `MISCONF` are the same kind)
/// keeps the spooled writes for a later try, and they all land once it takes writes again.
/// Before, replay took that refusal as final and dropped acknowledged writes. The refusals
/// while it waits are retried at a growing interval and logged a few times, not every tick.
#[test]
fn spooled_writes_wait_while_the_primary_refuses_writes_for_now() {
    let primary = RedisServer::start_with(&["--min-replicas-to-write", "1"]);
    let mut replica = RedisServer::start_replica_of(&primary);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let proxy = start(port, &primary, &replica, dir.path(), "100ms");
    assert!(
        poll_until(Duration::from_secs(10), || primary_routable(
            port,
            &primary.addr()
        )
        .then_some(()))
        .is_some(),
        "the primary never came up"
    );
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    c.set_read_timeout(Some(Duration::from_secs(5)));
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());

    replica.kill9();
    primary.stop();
    wait_down(port, &primary);
    assert_eq!(c.cmd(&["SET", "k", "spooled"]), Reply::ok());
    assert_eq!(c.cmd(&["LPUSH", "q", "a"]), Reply::Int(1));
    assert_eq!(c.cmd(&["LPUSH", "q", "b"]), Reply::Int(1));
    assert_eq!(spool_entries(port), Some(3));

    // Back, with no replica: every write it gets is refused with NOREPLICAS.
    primary.cont();
    assert!(
        poll_until(Duration::from_secs(10), || primary_routable(
            port,
            &primary.addr()
        )
        .then_some(()))
        .is_some(),
        "the primary never came back"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        spool_entries(port),
        Some(3),
        "entries left the spool while the primary refused them"
    );
    let log = proxy.stderr();
    let lines = log
        .lines()
        .filter(|l| l.contains("refused for now"))
        .count();
    assert!(
        lines <= 3,
        "{lines} log lines in 1.5 s for the same refusal:\n{}",
        log.lines()
            .filter(|l| l.contains("refused for now"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );

    replica.restart();
    assert!(
        poll_until(Duration::from_secs(15), || {
            (primary.cmd(&["GET", "k"]) == Reply::bulk("spooled")
                && pushed(&primary, "q") == ["a", "b"])
            .then_some(())
        })
        .is_some(),
        "spooled writes never reached the primary: k={:?} q={:?}; log:\n{}",
        primary.cmd(&["GET", "k"]),
        pushed(&primary, "q"),
        proxy.stderr()
    );
    assert_eq!(spool_entries(port), Some(0));
}

/// With `redis_db` other than 0 and a proxy user whose key rule forbids some keys: a write
/// the user may not make is refused before the spool (NOPERM, nothing spooled), and the
/// spooled writes are replayed into the pool's database, not database 0.
#[test]
fn spool_replay_lands_in_redis_db_and_takes_only_what_the_user_may_write() {
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let extra = "  redis_db: 3\n  users:\n    - name: default\n      nopass: true\n      rules: \"on +@all ~ok:*\"\n";
    let yaml = yaml(port, &primary, &replicas[0], dir.path(), "100ms", extra);
    let _proxy = start_with(port, &yaml);
    assert!(
        poll_until(Duration::from_secs(10), || primary_routable(
            port,
            &primary.addr()
        )
        .then_some(()))
        .is_some(),
        "the primary never came up"
    );
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    c.set_read_timeout(Some(Duration::from_secs(5)));
    primary.stop();
    wait_down(port, &primary);
    assert_eq!(c.cmd(&["SET", "ok:1", "spooled"]), Reply::ok());
    match c.cmd(&["SET", "no:1", "x"]) {
        Reply::Error(e) if e.starts_with("NOPERM") => {}
        r => panic!("a forbidden key's write answered {r:?}"),
    }
    assert_eq!(spool_entries(port), Some(1));
    primary.cont();
    let mut direct = Client::connect(&primary.addr());
    assert_eq!(direct.cmd(&["SELECT", "3"]), Reply::ok());
    assert!(
        poll_until(Duration::from_secs(10), || (direct.cmd(&["GET", "ok:1"])
            == Reply::bulk("spooled"))
        .then_some(()))
        .is_some(),
        "the spooled write never reached database 3"
    );
    assert_eq!(direct.cmd(&["EXISTS", "no:1"]), Reply::Int(0));
    assert_eq!(direct.cmd(&["SELECT", "0"]), Reply::ok());
    assert_eq!(
        direct.cmd(&["DBSIZE"]),
        Reply::Int(0),
        "database 0 got writes"
    );
}

/// A reload that turns the spool off while writes wait in it is refused whole (they were
/// acknowledged and would never be replayed); the spool goes on taking writes. Once the
/// primary is back and the spool replayed, the same file applies.
#[test]
fn a_reload_that_turns_off_a_spool_holding_writes_is_refused_until_it_is_replayed() {
    let (primary, replicas) = replica_set(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let proxy = start(port, &primary, &replicas[0], dir.path(), "100ms");
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    primary.stop();
    wait_down(port, &primary);
    for i in 0..10 {
        assert_eq!(c.cmd(&["LPUSH", "q", &format!("v{i}")]), Reply::Int(1));
    }
    let off: String = yaml(port, &primary, &replicas[0], dir.path(), "100ms", "")
        .lines()
        .filter(|l| !l.contains("spool_"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(proxy.dir().join("spool.yml"), &off).expect("write config");
    proxy.signal("HUP");
    let refused = poll_until(Duration::from_secs(10), || {
        proxy
            .stderr()
            .lines()
            .find(|l| l.contains("reload refused"))
            .map(str::to_string)
    });
    let refused = refused.unwrap_or_else(|| panic!("not refused; log:\n{}", proxy.stderr()));
    assert!(
        refused.contains("spool") && refused.contains("10 write"),
        "{refused}"
    );
    // Still spooled, behind the others.
    assert_eq!(c.cmd(&["LPUSH", "q", "v10"]), Reply::Int(1));
    primary.cont();
    let want: Vec<String> = (0..11).map(|i| format!("v{i}")).collect();
    let replayed = poll_until(Duration::from_secs(10), || {
        (pushed(&primary, "q") == want).then_some(())
    });
    assert!(
        replayed.is_some(),
        "{:?} replayed; log:\n{}",
        pushed(&primary, "q"),
        proxy.stderr()
    );
    proxy.signal("HUP");
    let applied = poll_until(Duration::from_secs(10), || {
        proxy.stderr().contains("reload: applied").then_some(())
    });
    assert!(applied.is_some(), "not applied; log:\n{}", proxy.stderr());
    assert_eq!(c.cmd(&["LPUSH", "q", "v11"]), Reply::Int(12));
}

/// The primary made a replica of a server outside the pool: the shard has no writable
/// primary while every node stays up (its checks keep their connections), so writes are
/// spooled. Returns the direct connection the test keeps to it (opened before any password
/// is set on it, so it stays authenticated).
fn spool_behind_a_demoted_primary(
    port: u16,
    primary: &RedisServer,
    elsewhere: &RedisServer,
    password: Option<&str>,
) -> Client {
    assert!(
        poll_until(Duration::from_secs(10), || primary_routable_as(
            port,
            &primary.addr(),
            password
        )
        .then_some(()))
        .is_some(),
        "the primary never came up"
    );
    let mut direct = Client::connect(&primary.addr());
    assert_eq!(
        direct.cmd(&["REPLICAOF", "127.0.0.1", &elsewhere.port().to_string()]),
        Reply::ok()
    );
    let mut c = client_as(port, password).expect("a client of the proxy");
    c.set_read_timeout(Some(Duration::from_secs(5)));
    assert_eq!(c.cmd(&["SET", "k", "spooled"]), Reply::ok());
    assert_eq!(c.cmd(&["LPUSH", "q", "a"]), Reply::Int(1));
    assert_eq!(c.cmd(&["LPUSH", "q", "b"]), Reply::Int(1));
    assert_eq!(spool_entries_as(port, password), Some(3));
    direct
}

/// The elements of list `key` read on `c`, oldest push first.
fn pushed_on(c: &mut Client, key: &str) -> Vec<String> {
    match c.cmd(&["LRANGE", key, "0", "-1"]) {
        Reply::Array(Some(v)) => v
            .iter()
            .rev()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect(),
        other => panic!("LRANGE: {other:?}"),
    }
}

/// The primary starts asking for a password while writes wait in the spool: replay gets
/// `NOAUTH` for rampart's credentials. The entries stay (a credentials fault is fixed by a
/// reload, and they were acknowledged), replay waits with a back-off, and a reload with the
/// password replays them all, in order.
#[test]
fn spool_replay_refused_for_rampart_credentials_keeps_the_entries_until_a_reload() {
    let (primary, replicas) = replica_set(1);
    let elsewhere = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let proxy = start(port, &primary, &replicas[0], dir.path(), "100ms");
    let mut direct = spool_behind_a_demoted_primary(port, &primary, &elsewhere, None);
    // A password on the primary; rampart's checks stay connected, its replay connects anew.
    assert_eq!(
        direct.cmd(&["CONFIG", "SET", "requirepass", "n3w-pw"]),
        Reply::ok()
    );
    assert_eq!(direct.cmd(&["REPLICAOF", "NO", "ONE"]), Reply::ok());
    assert!(
        poll_until(Duration::from_secs(10), || primary_routable(
            port,
            &primary.addr()
        )
        .then_some(()))
        .is_some(),
        "the primary never took writes again"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        spool_entries(port),
        Some(3),
        "acknowledged entries left the spool on NOAUTH; log:\n{}",
        proxy.stderr()
    );
    assert!(
        proxy
            .stderr()
            .contains("does not accept rampart's credentials"),
        "replay never met the password; log:\n{}",
        proxy.stderr()
    );
    assert_eq!(direct.cmd(&["EXISTS", "k", "q"]), Reply::Int(0));
    let lines = proxy
        .stderr()
        .lines()
        .filter(|l| l.contains("does not accept rampart's credentials"))
        .count();
    assert!(
        lines <= 2,
        "{lines} log lines in about a second for one refusal"
    );

    let with_password = yaml(
        port,
        &primary,
        &replicas[0],
        dir.path(),
        "100ms",
        "  redis_auth: n3w-pw\n",
    );
    std::fs::write(proxy.dir().join("spool.yml"), with_password).expect("write config");
    proxy.signal("HUP");
    assert!(
        poll_until(Duration::from_secs(15), || {
            (direct.cmd(&["GET", "k"]) == Reply::bulk("spooled")
                && pushed_on(&mut direct, "q") == ["a", "b"])
            .then_some(())
        })
        .is_some(),
        "the spool was not replayed after the reload; log:\n{}",
        proxy.stderr()
    );
    assert!(poll_until(Duration::from_secs(5), || (spool_entries_as(
        port,
        Some("n3w-pw")
    ) == Some(0))
    .then_some(()))
    .is_some());
}

/// rampart's backend user loses the right to run LPUSH while writes wait in the spool: at
/// replay the server refuses those entries as such (`NOPERM`). They leave the spool (kept,
/// they would stop every later write of the shard for good) with an error-level log line
/// saying an acknowledged write is lost, and are counted (`replay_errors`); the SET
/// replays.
#[test]
fn spool_entries_the_backend_user_may_not_run_leave_with_an_error_and_a_count() {
    let (primary, replicas) = replica_set(1);
    for s in [&primary, &replicas[0]] {
        assert_eq!(
            s.cmd(&["ACL", "SETUSER", "app", "on", ">app-pw", "~*", "&*", "+@all"]),
            Reply::ok()
        );
    }
    let elsewhere = RedisServer::start();
    assert_eq!(
        elsewhere.cmd(&["ACL", "SETUSER", "app", "on", ">app-pw", "~*", "&*", "+@all"]),
        Reply::ok()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let extra = "  redis_auth: app-pw\n  redis_username: app\n";
    let proxy = start_with(
        port,
        &yaml(port, &primary, &replicas[0], dir.path(), "100ms", extra),
    );
    let pw = Some("app-pw");
    let mut direct = spool_behind_a_demoted_primary(port, &primary, &elsewhere, pw);
    assert_eq!(
        direct.cmd(&["ACL", "SETUSER", "app", "-lpush"]),
        Reply::ok()
    );
    assert_eq!(direct.cmd(&["REPLICAOF", "NO", "ONE"]), Reply::ok());
    assert!(
        poll_until(Duration::from_secs(10), || (spool_entries_as(port, pw)
            == Some(0))
        .then_some(()))
        .is_some(),
        "the spool never emptied; log:\n{}",
        proxy.stderr()
    );
    assert_eq!(direct.cmd(&["GET", "k"]), Reply::bulk("spooled"));
    assert_eq!(direct.cmd(&["EXISTS", "q"]), Reply::Int(0));
    let log = proxy.stderr();
    let lost: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("an acknowledged write is lost"))
        .collect();
    assert_eq!(lost.len(), 2, "one line per lost entry:\n{log}");
    for l in &lost {
        assert!(
            l.contains("ERROR") && l.contains("NOPERM") && l.contains("backend user"),
            "{l}"
        );
    }
    let mut c = client_as(port, pw).expect("a client of the proxy");
    let Reply::Bulk(Some(info)) = c.cmd(&["INFO", "pools"]) else {
        panic!("INFO pools");
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    assert!(info.contains(",replay_errors=2,"), "{info}");
}
