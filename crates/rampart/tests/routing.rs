//! Read/write splitting on one endpoint over a real primary and replicas: writes reach only the
//! primary, reads follow the pool's read policy, read-your-writes, reads-only and writes-only
//! listeners, and the hold that keeps writes while a shard has no primary.

use std::time::{Duration, Instant};

use testkit::{free_port, poll_until, Client, Proxy, RedisServer, Reply};

struct Ha {
    primary: RedisServer,
    replicas: Vec<RedisServer>,
    _proxy: Proxy,
    port: u16,
    extra: Vec<u16>,
}

/// `cmdstat_<name>` calls on a server.
fn calls(s: &RedisServer, name: &str) -> u64 {
    s.info("commandstats")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A primary, two replicas, and rampart over them with `options` (YAML lines of the pool).
fn start(options: &str, extra_listens: &[&str]) -> Ha {
    let primary = RedisServer::start();
    let replicas: Vec<RedisServer> = (0..2)
        .map(|_| RedisServer::start_replica_of(&primary))
        .collect();
    for r in &replicas {
        r.wait_replication_up(Duration::from_secs(10));
    }
    let port = free_port();
    let extra: Vec<u16> = extra_listens.iter().map(|_| free_port()).collect();
    let mut yml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  primary: {}\n  replicas: [{}, {}]\n  health_check:\n    interval: 100ms\n    timeout: 100ms\n{options}",
        primary.addr(),
        replicas[0].addr(),
        replicas[1].addr()
    );
    for (key, p) in extra_listens.iter().zip(&extra) {
        yml.push_str(&format!("  {key}: 127.0.0.1:{p}\n"));
    }
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", yml)
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--workers", "2"])
        .wait_port(port)
        .start();
    let ha = Ha {
        primary,
        replicas,
        _proxy: proxy,
        port,
        extra,
    };
    ha.wait_all_up();
    ha
}

impl Ha {
    fn client(&self) -> Client {
        Client::connect(&format!("127.0.0.1:{}", self.port))
    }
    fn wait_all_up(&self) {
        let mut c = self.client();
        let up = poll_until(Duration::from_secs(5), || {
            let Reply::Bulk(Some(info)) = c.cmd(&["INFO", "pools"]) else {
                return None;
            };
            let text = String::from_utf8_lossy(&info).to_string();
            let nodes = text.lines().filter(|l| l.starts_with("node_")).count();
            (nodes == 3 && !text.contains("up=0")).then_some(())
        });
        assert!(up.is_some(), "every node passes its health checks");
    }
    fn replica_gets(&self) -> u64 {
        self.replicas.iter().map(|r| calls(r, "get")).sum()
    }
}

#[test]
fn writes_reach_only_the_primary_and_reads_spread_over_replicas() {
    let ha = start("  read_policy: prefer-replica\n", &[]);
    let mut c = ha.client();
    let Reply::Bulk(Some(info)) = c.cmd(&["INFO", "pools"]) else {
        panic!("INFO pools")
    };
    let info = String::from_utf8_lossy(&info).to_string();
    let shard_line = format!(
        "shard_alpha_alpha:primary={},writable=1,nodes=3",
        ha.primary.addr()
    );
    assert!(info.contains(&shard_line), "{info}");
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["INCR", "n"]), Reply::Int(1));
    // Let replication catch up, then read.
    assert!(poll_until(Duration::from_secs(3), || {
        ha.replicas
            .iter()
            .all(|r| r.cmd(&["GET", "k"]) == Reply::bulk("v"))
            .then_some(())
    })
    .is_some());
    let before = [calls(&ha.replicas[0], "get"), calls(&ha.replicas[1], "get")];
    let primary_gets = calls(&ha.primary, "get");
    for _ in 0..100 {
        assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    }
    let after = [calls(&ha.replicas[0], "get"), calls(&ha.replicas[1], "get")];
    assert_eq!(
        calls(&ha.primary, "get"),
        primary_gets,
        "no read reached the primary"
    );
    assert_eq!(after[0] - before[0] + after[1] - before[1], 100);
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "both replicas serve reads"
    );
    // INCR is not a read: it must reach the primary even under prefer-replica.
    assert_eq!(c.cmd(&["INCR", "n"]), Reply::Int(2));
    assert_eq!(calls(&ha.primary, "incr"), 2);
    for r in &ha.replicas {
        assert_eq!(
            calls(r, "incr"),
            2,
            "a replica sees INCR only through replication"
        );
    }
}

#[test]
fn read_policy_primary_keeps_every_read_on_the_primary() {
    let ha = start("  read_policy: primary\n", &[]);
    let mut c = ha.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    let before = ha.replica_gets();
    for _ in 0..50 {
        assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    }
    assert_eq!(ha.replica_gets(), before);
    assert!(calls(&ha.primary, "get") >= 50);
}

#[test]
fn read_your_writes_sends_a_writers_reads_to_the_primary_for_a_while() {
    let ha = start(
        "  read_policy: prefer-replica\n  read_your_writes: 700ms\n",
        &[],
    );
    let mut writer = ha.client();
    let mut other = ha.client();
    let primary_before = calls(&ha.primary, "get");
    let replicas_before = ha.replica_gets();
    for i in 0..50 {
        let v = i.to_string();
        let r = writer.pipeline(&[vec!["SET", "k", v.as_str()], vec!["GET", "k"]]);
        assert_eq!(r[1], Reply::bulk(&v), "the writer reads its own write");
    }
    assert_eq!(calls(&ha.primary, "get") - primary_before, 50);
    assert_eq!(
        ha.replica_gets(),
        replicas_before,
        "the writer's reads stayed on the primary"
    );
    for _ in 0..20 {
        other.cmd(&["GET", "k"]);
    }
    assert_eq!(
        ha.replica_gets() - replicas_before,
        20,
        "other clients still read replicas"
    );
    std::thread::sleep(Duration::from_millis(800));
    writer.cmd(&["GET", "k"]);
    assert_eq!(
        ha.replica_gets() - replicas_before,
        21,
        "after the window the writer reads replicas"
    );
}

#[test]
fn a_reads_only_listener_refuses_writes_and_a_writes_listener_reads_the_primary() {
    let ha = start("  read_policy: replica\n", &["read_listen", "write_listen"]);
    let mut main = ha.client();
    assert_eq!(main.cmd(&["SET", "k", "v"]), Reply::ok());
    let mut reads = Client::connect(&format!("127.0.0.1:{}", ha.extra[0]));
    let r = reads.cmd(&["SET", "k", "x"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("reads only")),
        "{r:?}"
    );
    assert!(poll_until(Duration::from_secs(3), || {
        (reads.cmd(&["GET", "k"]) == Reply::bulk("v")).then_some(())
    })
    .is_some());
    let mut writes = Client::connect(&format!("127.0.0.1:{}", ha.extra[1]));
    let before = calls(&ha.primary, "get");
    assert_eq!(writes.cmd(&["SET", "k", "w"]), Reply::ok());
    assert_eq!(writes.cmd(&["GET", "k"]), Reply::bulk("w"));
    assert_eq!(calls(&ha.primary, "get"), before + 1);
}

#[test]
fn writes_wait_while_the_primary_says_replica_and_go_through_when_it_is_back() {
    let ha = start("  failover_hold: 3s\n", &[]);
    let mut c = ha.client();
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    // Demote the configured primary: the proxy must stop writing to it.
    let other = &ha.replicas[0];
    ha.primary
        .cmd(&["REPLICAOF", "127.0.0.1", &other.port().to_string()]);
    std::thread::sleep(Duration::from_millis(400));
    let sets_before = calls(&ha.primary, "set");
    c.send_raw(&testkit::encode_command(&["SET", "k", "2"]))
        .expect("send");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        calls(&ha.primary, "set"),
        sets_before,
        "no write reaches a node that says replica"
    );
    // Back to primary within the hold: the held write goes through.
    ha.primary.cmd(&["REPLICAOF", "NO", "ONE"]);
    let t = Instant::now();
    assert_eq!(c.read_reply().expect("reply"), Reply::ok());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(ha.primary.cmd(&["GET", "k"]), Reply::bulk("2"));
}

#[test]
fn a_held_write_fails_with_a_clear_error_after_failover_hold() {
    let ha = start("  failover_hold: 300ms\n", &[]);
    let mut c = ha.client();
    ha.primary
        .cmd(&["REPLICAOF", "127.0.0.1", &ha.replicas[0].port().to_string()]);
    std::thread::sleep(Duration::from_millis(400));
    let t = Instant::now();
    let r = c.cmd(&["SET", "k", "x"]);
    let took = t.elapsed();
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("no primary")),
        "{r:?}"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(
        c.cmd(&["PING"]),
        Reply::simple("PONG"),
        "the connection stays usable"
    );
}

#[test]
fn a_planned_switchover_under_write_load_loses_nothing_and_pauses_writes_briefly() {
    let ha = start("  failover_hold: 5s\n", &[]);
    let addr = format!("127.0.0.1:{}", ha.port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let addr = addr.clone();
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                let (mut acked, mut errors, mut longest) = (Vec::new(), 0, Duration::ZERO);
                let mut last = Instant::now();
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    let key = format!("w{t}:{n}");
                    match c.cmd(&["SET", key.as_str(), "1"]) {
                        Reply::Simple(s) if s == "OK" => {
                            acked.push(key);
                            longest = longest.max(last.elapsed());
                            last = Instant::now();
                        }
                        other => {
                            eprintln!("write error: {other:?}");
                            errors += 1;
                        }
                    }
                    n += 1;
                }
                (acked, errors, longest)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut admin = ha.client();
    let t = Instant::now();
    let r = admin.cmd(&["RAMPART", "SWITCHOVER", "alpha"]);
    let took = t.elapsed();
    assert!(
        matches!(&r, Reply::Simple(s) if s.contains("switched to")),
        "{r:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut errors = 0;
    let mut pause = Duration::ZERO;
    for w in writers {
        let (a, e, p) = w.join().expect("writer");
        acked.extend(a);
        errors += e;
        pause = pause.max(p);
    }
    let new_primary = ha
        .replicas
        .iter()
        .find(|r| r.role() == "master")
        .expect("a replica was promoted");
    let mut c = Client::connect(&new_primary.addr());
    let missing = acked
        .iter()
        .filter(|k| c.cmd(&["EXISTS", k.as_str()]) != Reply::Int(1))
        .count();
    println!(
        "switchover: {} ms, {} acknowledged writes, {errors} errors, {missing} lost, longest write pause {} ms",
        took.as_millis(),
        acked.len(),
        pause.as_millis()
    );
    assert_eq!(errors, 0, "no client saw an error");
    assert_eq!(missing, 0, "every acknowledged write is on the new primary");
    assert!(acked.len() > 100, "the load ran");
    assert!(pause < Duration::from_secs(1), "writes paused {pause:?}");
}

#[test]
fn admin_commands_need_a_local_client_and_a_known_shard() {
    let ha = start("", &[]);
    let mut c = ha.client();
    let r = c.cmd(&["RAMPART", "SWITCHOVER", "nope"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("no shard 'nope'")),
        "{r:?}"
    );
    let r = c.cmd(&["RAMPART", "BOGUS"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("RAMPART HELP")),
        "{r:?}"
    );
    assert!(matches!(c.cmd(&["RAMPART", "HELP"]), Reply::Array(Some(_))));
}
