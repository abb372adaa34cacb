//! Session state that follows a Redis Cluster slot move: shard channels subscribed again on
//! the slot's new owner (after `CLUSTER SETSLOT ... NODE` and after a kill -9 failover),
//! classic channels moved off a killed node, patterns that hear a broadcast PUBLISH once,
//! and WATCH / MULTI / EXEC on a slot that moved before or after WATCH. Every test runs against a real cluster (`redis-cli --cluster
//! create`, three primaries).
//!
//! Run with `RUST_TEST_THREADS=2`: each test starts its own cluster.

mod common;

use std::time::{Duration, Instant};

use testkit::{free_port, poll_until, Client, ClusterSetup, Proxy, RedisCluster, Reply};

/// A cluster and a rampart pool in front of it, whose map is read again only when
/// something asks for it (`cluster_refresh: 60s`), so the tests see rampart with a stale map.
struct Env {
    cluster: RedisCluster,
    _proxy: Proxy,
    port: u16,
}

impl Env {
    fn start(cluster: RedisCluster, options: &str) -> Env {
        let port = free_port();
        let seeds = cluster.addrs()[..3].join(", ");
        let yaml = format!(
            "c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n  timeout: 2000\n  cluster_refresh: 60s\n{options}"
        );
        let proxy = common::start_rampart(&yaml, port, 1);
        Env {
            cluster,
            _proxy: proxy,
            port,
        }
    }

    /// What rampart logged so far.
    fn proxy_log(&self) -> String {
        self._proxy.stderr()
    }

    fn client(&self) -> Client {
        let mut c = Client::connect(&format!("127.0.0.1:{}", self.port));
        c.set_read_timeout(Some(Duration::from_secs(10)));
        c
    }

    /// A direct connection to node `i`.
    fn node(&self, i: usize) -> Client {
        Client::connect(&self.cluster.nodes[i].addr())
    }

    /// Moves `slot` from primary `from` to primary `to` as `redis-cli --cluster reshard`
    /// does: IMPORTING on `to`, MIGRATING on `from`, `keys` moved with MIGRATE, then
    /// `SETSLOT ... NODE` on `to` first (it bumps its epoch) and every other primary; waits
    /// until every node agrees. Returns when the last `SETSLOT` was answered.
    fn move_slot(&self, slot: u16, from: usize, to: usize, keys: &[&str]) -> Instant {
        self.begin_move(slot, from, to);
        self.migrate(from, to, keys);
        self.finish_move(slot, to)
    }

    /// Opens the move of `slot` from primary `from` to primary `to`: IMPORTING on `to`,
    /// MIGRATING on `from`.
    fn begin_move(&self, slot: u16, from: usize, to: usize) {
        let s = slot.to_string();
        let (from_id, to_id) = (self.cluster.id(from), self.cluster.id(to));
        let r = self
            .node(to)
            .cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]);
        assert_eq!(r, Reply::ok());
        let r = self
            .node(from)
            .cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]);
        assert_eq!(r, Reply::ok());
    }

    /// MIGRATE of `keys` from node `from` to node `to`.
    fn migrate(&self, from: usize, to: usize, keys: &[&str]) {
        if keys.is_empty() {
            return;
        }
        let port = self.cluster.nodes[to].port().to_string();
        let mut cmd = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        cmd.extend(keys);
        assert_eq!(self.node(from).cmd(&cmd), Reply::ok(), "MIGRATE {keys:?}");
    }

    /// `SETSLOT slot NODE to` on `to`, then on every other primary; returns when the last
    /// was answered, once every node agrees.
    fn finish_move(&self, slot: u16, to: usize) -> Instant {
        let (s, to_id) = (slot.to_string(), self.cluster.id(to));
        let mut order = vec![to];
        order.extend(self.cluster.primaries().into_iter().filter(|&p| p != to));
        for p in order {
            let r = self
                .node(p)
                .cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
            assert_eq!(r, Reply::ok(), "SETSLOT NODE on node {p}");
        }
        let done = Instant::now();
        self.cluster.wait_ok(Duration::from_secs(10));
        done
    }

    /// The replica of primary `p`.
    fn replica_of(&self, p: usize) -> usize {
        let port = self.cluster.nodes[p].port();
        (0..self.cluster.nodes.len())
            .find(|&i| {
                self.cluster.nodes[i]
                    .info("replication")
                    .contains(&format!("master_port:{port}"))
            })
            .expect("a replica")
    }

    /// `calls` of `cmd` in node `i`'s `INFO commandstats`: the times it ran (0 when never;
    /// a command refused with a redirection did not run).
    fn calls(&self, i: usize, cmd: &str) -> i64 {
        self.stat(i, "commandstats", &format!("cmdstat_{cmd}:calls="))
    }

    /// The `MOVED` replies node `i` gave (`INFO errorstats`).
    fn moved(&self, i: usize) -> i64 {
        self.stat(i, "errorstats", "errorstat_MOVED:count=")
    }

    /// The number after `prefix` in node `i`'s INFO `section` (0 when absent).
    fn stat(&self, i: usize, section: &str, prefix: &str) -> i64 {
        let info = self.cluster.nodes[i].info(section);
        info.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|n| n.split(',').next())
            .map_or(0, |n| n.trim().parse().unwrap_or(0))
    }
}

/// Waits until node `i` counts `n` subscribers of the shard channel `ch`.
fn shard_subscribers(env: &Env, i: usize, ch: &str, n: i64) -> bool {
    poll_until(Duration::from_secs(10), || {
        let r = env.node(i).cmd(&["PUBSUB", "SHARDNUMSUB", ch]);
        (r == Reply::Array(Some(vec![Reply::bulk(ch), Reply::Int(n)]))).then_some(())
    })
    .is_some()
}

/// `sub` reads exactly the smessage `msg` on `ch` next (not an unsubscribe, not an error).
fn expect_smessage(sub: &mut Client, ch: &str, msg: &str) {
    let r = sub.read_reply().expect("a message");
    assert_eq!(r, Reply::bulks(["smessage", ch, msg]));
}

#[test]
fn a_shard_channel_moves_with_its_slot_to_another_primary() {
    let env = Env::start(ClusterSetup::new().start(), "");
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let ch = env.cluster.key_on(a, "orders");
    let slot = testkit::cluster_slot(ch.as_bytes());
    let mut sub = env.client();
    assert_eq!(
        sub.cmd(&["SSUBSCRIBE", &ch]),
        Reply::Array(Some(vec![
            Reply::bulk("ssubscribe"),
            Reply::bulk(&ch),
            Reply::Int(1)
        ]))
    );
    assert!(shard_subscribers(&env, a, &ch, 1), "not subscribed on {a}");
    let mut publisher = env.client();
    assert_eq!(publisher.cmd(&["SPUBLISH", &ch, "before"]), Reply::Int(1));
    expect_smessage(&mut sub, &ch, "before");

    // The slot moves to `b`: `a` drops the channel (and says sunsubscribe to rampart).
    let moved = env.move_slot(slot, a, b, &[]);
    assert!(
        shard_subscribers(&env, b, &ch, 1),
        "the shard channel was not subscribed on the slot's new owner"
    );
    println!(
        "shard channel subscribed on the new owner {:?} after the last SETSLOT NODE",
        moved.elapsed()
    );
    assert!(shard_subscribers(&env, a, &ch, 0));
    // Published on the new owner directly, and through rampart: the client gets both, and
    // nothing else came before them (no sunsubscribe, no error).
    assert_eq!(env.node(b).cmd(&["SPUBLISH", &ch, "direct"]), Reply::Int(1));
    expect_smessage(&mut sub, &ch, "direct");
    assert_eq!(publisher.cmd(&["SPUBLISH", &ch, "through"]), Reply::Int(1));
    expect_smessage(&mut sub, &ch, "through");
    // Still subscribed to it, as the client sees it.
    assert_eq!(
        sub.cmd(&["PING"]),
        Reply::bulks(["pong", ""]),
        "nothing else was pending"
    );
    // Leaving it reaches the new owner.
    assert_eq!(
        sub.cmd(&["SUNSUBSCRIBE", &ch]),
        Reply::Array(Some(vec![
            Reply::bulk("sunsubscribe"),
            Reply::bulk(&ch),
            Reply::Int(0)
        ]))
    );
    assert!(shard_subscribers(&env, b, &ch, 0));
}

#[test]
fn shard_channels_follow_redis_cli_reshard() {
    let env = Env::start(ClusterSetup::new().start(), "");
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let (a_id, b_id) = (env.cluster.id(a), env.cluster.id(b));
    // `redis-cli --cluster reshard` takes the source's slots from its lowest: channels in
    // `a`'s first 1000 slots move, the others stay.
    let first = (0..16384u16)
        .find(|&s| env.cluster.owner_of_slot(s) == a)
        .expect("a serves slots");
    let (mut moving, mut staying) = (Vec::new(), Vec::new());
    for n in 0.. {
        let ch = format!("feed:{n}");
        let slot = testkit::cluster_slot(ch.as_bytes());
        if env.cluster.owner_of_slot(slot) != a {
            continue;
        }
        if slot < first + 900 && moving.len() < 10 {
            moving.push(ch);
        } else if slot > first + 1100 && staying.len() < 5 {
            staying.push(ch);
        }
        if moving.len() == 10 && staying.len() == 5 {
            break;
        }
    }
    let all: Vec<&String> = moving.iter().chain(&staying).collect();
    let mut sub = env.client();
    for ch in &all {
        let r = sub.cmd(&["SSUBSCRIBE", ch.as_str()]);
        assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    }
    for ch in &all {
        assert!(shard_subscribers(&env, a, ch, 1), "{ch} not on {a}");
    }
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &env.cluster.nodes[a].addr()])
        .args(["--cluster-from", &a_id, "--cluster-to", &b_id])
        .args(["--cluster-slots", "1000", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster reshard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.cluster.wait_ok(Duration::from_secs(10));
    for (ch, owner) in moving
        .iter()
        .map(|c| (c, b))
        .chain(staying.iter().map(|c| (c, a)))
    {
        let slot = testkit::cluster_slot(ch.as_bytes());
        assert_eq!(env.cluster.owner_of_slot(slot), owner, "{ch}");
        assert!(
            shard_subscribers(&env, owner, ch, 1),
            "{ch} not on node {owner}"
        );
        let other = if owner == a { b } else { a };
        assert!(
            shard_subscribers(&env, other, ch, 0),
            "{ch} still on node {other}"
        );
        assert_eq!(
            env.node(owner).cmd(&["SPUBLISH", ch, "after"]),
            Reply::Int(1)
        );
        expect_smessage(&mut sub, ch, "after");
    }
    assert_eq!(sub.cmd(&["PING"]), Reply::bulks(["pong", ""]));
}

/// What a publisher through rampart saw: SPUBLISH answers how many subscribers the owner
/// had, so a 1 means the message reached rampart's subscription.
type Published = (Vec<u64>, usize, Vec<String>);

/// A client that publishes `SPUBLISH ch <n>` through rampart every millisecond, `n` counting
/// from 0, until its flag is set; the thread returns the numbers answered 1, how many were
/// answered another number, and the errors.
fn spublish_every_ms(
    env: &Env,
    ch: &str,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<Published>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (addr, ch, flag) = (
        format!("127.0.0.1:{}", env.port),
        ch.to_string(),
        std::sync::Arc::clone(&stop),
    );
    let publisher = std::thread::spawn(move || {
        let mut c = Client::connect(&addr);
        let (mut heard, mut unheard, mut errors) = (Vec::new(), 0, Vec::new());
        let mut n = 0u64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            match c.cmd(&["SPUBLISH", &ch, &n.to_string()]) {
                Reply::Int(1) => heard.push(n),
                Reply::Int(_) => unheard += 1,
                other => errors.push(format!("{n}: {other:?}")),
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        (heard, unheard, errors)
    });
    (stop, publisher)
}

/// Stops [`spublish_every_ms`]'s client and reads from `sub` every smessage up to the last
/// one answered 1; returns what the publisher saw and the numbers `sub` heard, in order.
fn stop_and_collect(
    (stop, publisher): (
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<Published>,
    ),
    sub: &mut Client,
) -> (Vec<u64>, usize, Vec<String>, Vec<u64>) {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (heard, unheard, errors) = publisher.join().expect("publisher");
    let last = *heard.last().expect("messages heard");
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        match sub.read_reply().expect("a message") {
            Reply::Array(Some(items)) if items.len() == 3 => {
                assert_eq!(items[0], Reply::bulk("smessage"), "{items:?}");
                let n = items[2].as_str().and_then(|s| s.parse::<u64>().ok());
                got.push(n.expect("a number"));
            }
            other => panic!("not an smessage: {other:?}"),
        }
    }
    (heard, unheard, errors, got)
}

/// In order, each once, and every message that reached a subscription (`heard`) arrived.
fn assert_heard_in_order(heard: &[u64], got: Vec<u64>) {
    if let Some(i) = got.windows(2).position(|w| w[0] >= w[1]) {
        panic!(
            "out of order or twice: {:?}",
            &got[i.saturating_sub(5)..(i + 6).min(got.len())]
        );
    }
    let got: std::collections::HashSet<u64> = got.into_iter().collect();
    let lost: Vec<&u64> = heard.iter().filter(|n| !got.contains(n)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
}

#[test]
fn a_shard_message_that_reached_a_subscriber_is_never_lost_across_moves() {
    let env = Env::start(ClusterSetup::new().start(), "");
    let p = env.cluster.primaries();
    let ch = env.cluster.key_on(p[0], "ticks");
    let slot = testkit::cluster_slot(ch.as_bytes());
    let mut sub = env.client();
    let r = sub.cmd(&["SSUBSCRIBE", &ch]);
    assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    assert!(shard_subscribers(&env, p[0], &ch, 1));
    let publisher = spublish_every_ms(&env, &ch);
    std::thread::sleep(Duration::from_millis(200));
    // The slot goes around the three primaries and back.
    for w in [p[0], p[1], p[2], p[0]].windows(2) {
        env.move_slot(slot, w[0], w[1], &[]);
        assert!(shard_subscribers(&env, w[1], &ch, 1));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (heard, unheard, errors, got) = stop_and_collect(publisher, &mut sub);
    println!(
        "three moves: {} messages reached a subscription, {} found none (published while it moved), {} errors",
        heard.len(),
        unheard,
        errors.len()
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_heard_in_order(&heard, got);
}

/// A keyspace notification channel (`__keyspace@0__:<key>`, sent only by the key's node)
/// follows its key's slot to another primary: after the move, the key's events come from
/// the new owner, and the subscriber hears them there.
#[test]
fn a_keyspace_channel_follows_its_keys_slot_to_another_primary() {
    let env = Env::start(ClusterSetup::new().replicas(0).start(), "");
    for i in 0..env.cluster.nodes.len() {
        let r = env
            .node(i)
            .cmd(&["CONFIG", "SET", "notify-keyspace-events", "KA"]);
        assert_eq!(r, Reply::ok());
    }
    let p = env.cluster.primaries();
    let key = env.cluster.key_on(p[0], "watched");
    let ch = format!("__keyspace@0__:{key}");
    let mut sub = env.client();
    let r = sub.cmd(&["SUBSCRIBE", &ch]);
    assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    // Until the nodes pass their first health checks the link waits to connect (the
    // SUBSCRIBE was answered, as when no node can take it): wait for it on the key's node.
    let numsub = |i: usize| env.node(i).cmd(&["PUBSUB", "NUMSUB", &ch]);
    let on = |i: usize| numsub(i) == Reply::Array(Some(vec![Reply::bulk(&ch), Reply::Int(1)]));
    assert!(poll_until(Duration::from_secs(5), || on(p[0]).then_some(())).is_some());
    let mut c = env.client();
    let heard = |sub: &mut Client, event: &str| {
        let r = sub.read_reply();
        assert_eq!(
            r.as_ref().ok(),
            Some(&Reply::bulks(["message", &ch, event])),
            "{r:?}\n{}",
            env.proxy_log()
        );
    };
    assert_eq!(c.cmd(&["SET", &key, "1"]), Reply::ok());
    heard(&mut sub, "set");
    env.move_slot(testkit::cluster_slot(key.as_bytes()), p[0], p[1], &[&key]);
    // rampart learns the move from the first write's MOVED; the events published before it
    // subscribed on the new node are lost, as for a client of the cluster itself.
    let moved = poll_until(Duration::from_secs(5), || {
        assert_eq!(c.cmd(&["SET", &key, "2"]), Reply::ok());
        on(p[1]).then_some(())
    });
    assert!(
        moved.is_some(),
        "not subscribed on the key's new node: {:?}\n{}",
        numsub(p[1]),
        env.proxy_log()
    );
    // What the old node sent before the move (MIGRATE's `del`) and the writes above.
    sub.set_read_timeout(Some(Duration::from_millis(300)));
    while sub.read_reply().is_ok() {}
    sub.set_read_timeout(Some(Duration::from_secs(10)));
    assert_eq!(c.cmd(&["EXPIRE", &key, "100"]), Reply::Int(1));
    heard(&mut sub, "expire");
    assert_eq!(sub.cmd(&["PING"]), Reply::bulks(["pong", ""]));
}

#[test]
fn a_shard_channel_read_from_replicas_moves_with_its_slot() {
    let env = Env::start(
        ClusterSetup::new().start(),
        "  pubsub_from: replica\n  read_policy: prefer-replica\n",
    );
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let (ra, rb) = (env.replica_of(a), env.replica_of(b));
    let ch = env.cluster.key_on(a, "prices");
    let slot = testkit::cluster_slot(ch.as_bytes());
    let mut sub = env.client();
    let r = sub.cmd(&["SSUBSCRIBE", &ch]);
    assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    assert!(shard_subscribers(&env, ra, &ch, 1), "not on a's replica");
    // The replica of the slot's old owner drops the channel too; rampart subscribes it on
    // the new owner's replica, which hears what is published on its primary.
    env.move_slot(slot, a, b, &[]);
    assert!(
        shard_subscribers(&env, rb, &ch, 1),
        "not subscribed on the new owner's replica"
    );
    assert!(shard_subscribers(&env, ra, &ch, 0));
    env.node(b).cmd(&["SPUBLISH", &ch, "direct"]);
    expect_smessage(&mut sub, &ch, "direct");
    assert_eq!(sub.cmd(&["PING"]), Reply::bulks(["pong", ""]));
}

#[test]
fn a_shard_channel_follows_a_failover_of_its_primary() {
    failover_of_the_primary("");
}

#[test]
fn a_shard_channel_read_from_a_replica_stays_when_that_replica_is_promoted() {
    // The promoted replica drops its own subscribers of the slots it takes over.
    failover_of_the_primary("  pubsub_from: replica\n  read_policy: prefer-replica\n");
}

/// A cluster with replicas behind a pool with `failover_hold: 10s` and `options`, and a
/// client SSUBSCRIBEd through it to a channel of the first primary: the environment, that
/// primary, its replica, the channel and the subscriber.
fn shard_subscriber(options: &str) -> (Env, usize, usize, String, Client) {
    let cluster = ClusterSetup::new().full_coverage(false).start();
    let env = Env::start(cluster, &format!("  failover_hold: 10s\n{options}"));
    let a = env.cluster.primaries()[0];
    let replica = env.replica_of(a);
    let ch = env.cluster.key_on(a, "alerts");
    let mut sub = env.client();
    let r = sub.cmd(&["SSUBSCRIBE", &ch]);
    assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    (env, a, replica, ch, sub)
}

/// A client SSUBSCRIBEd through a pool with `options`; its channel's primary is killed
/// and its replica promoted; the client goes on hearing it.
fn failover_of_the_primary(options: &str) {
    let (mut env, a, replica, ch, mut sub) = shard_subscriber(options);
    let on = if options.is_empty() { a } else { replica };
    assert!(shard_subscribers(&env, on, &ch, 1));

    env.cluster.nodes[a].kill9();
    wait_promoted_and_subscribed(&env, replica, &ch);
    assert_eq!(
        env.node(replica).cmd(&["SPUBLISH", &ch, "direct"]),
        Reply::Int(1)
    );
    expect_smessage(&mut sub, &ch, "direct");
    let mut publisher = env.client();
    assert_eq!(publisher.cmd(&["SPUBLISH", &ch, "through"]), Reply::Int(1));
    expect_smessage(&mut sub, &ch, "through");
    assert_eq!(sub.cmd(&["PING"]), Reply::bulks(["pong", ""]));
}

/// `CLUSTER FAILOVER` on the replica: the old primary pauses writers while it hands over,
/// then drops its shard channels and, a replica now, still runs the SPUBLISH it paused
/// (Redis 7 serves `SPUBLISH` on a replica of the slot's primary), answering 0: nobody was
/// subscribed there any more. That one was sent before anything showed the failover, so at
/// most one (the publisher has one in flight) is answered 0; every later one waits for
/// rampart's subscription on the new primary. Before, 2 to 7 were answered 0 in every run.
#[test]
fn a_cluster_failover_while_publishing_answers_no_later_shard_publish_nobody_heard() {
    publishing_through_a_failover(1, |env, _, replica| {
        let r = env.node(replica).cmd(&["CLUSTER", "FAILOVER"]);
        assert_eq!(r, Reply::ok(), "CLUSTER FAILOVER on the replica");
    });
}

#[test]
fn a_killed_primary_while_publishing_never_answers_a_shard_publish_nobody_heard() {
    publishing_through_a_failover(0, |env, primary, _| env.cluster.nodes[primary].kill9());
}

/// A client SSUBSCRIBEd through rampart, another publishing to its channel every
/// millisecond, while `fail_over` makes the channel's replica its primary: a SPUBLISH
/// either fails or reaches the subscriber; at most `in_flight` are answered 0 (a message
/// nobody heard). Writes held by the failover reach the new primary once rampart's
/// subscriber connection subscribed there, and while the shard channels the old primary
/// dropped are placed again the shard's writes wait too.
fn publishing_through_a_failover(in_flight: usize, fail_over: impl Fn(&mut Env, usize, usize)) {
    let (mut env, a, replica, ch, mut sub) = shard_subscriber("");
    assert!(shard_subscribers(&env, a, &ch, 1));
    let publisher = spublish_every_ms(&env, &ch);
    std::thread::sleep(Duration::from_millis(300));
    fail_over(&mut env, a, replica);
    wait_promoted_and_subscribed(&env, replica, &ch);
    // Published through rampart to the new primary for a while.
    std::thread::sleep(Duration::from_millis(500));
    let (heard, unheard, errors, got) = stop_and_collect(publisher, &mut sub);
    println!(
        "failover: {} messages heard, {} answered 0, {} errors",
        heard.len(),
        unheard,
        errors.len()
    );
    assert!(
        unheard <= in_flight,
        "{unheard} SPUBLISH answered 0 (errors: {errors:?})"
    );
    assert!(errors.len() <= 1, "{errors:?}");
    assert_heard_in_order(&heard, got);
}

/// Waits until node `replica` is a primary and has rampart's subscription to `ch`.
fn wait_promoted_and_subscribed(env: &Env, replica: usize, ch: &str) {
    let promoted = poll_until(Duration::from_secs(20), || {
        (env.cluster.nodes[replica].role() == "master").then_some(())
    });
    assert!(promoted.is_some(), "the cluster promoted no replica");
    assert!(
        shard_subscribers(env, replica, ch, 1),
        "the shard channel was not subscribed on the promoted replica"
    );
}

#[test]
fn a_classic_channel_is_subscribed_again_on_another_node_when_its_node_is_killed() {
    // No replicas: the killed node is never replaced, so only another node can serve.
    let cluster = ClusterSetup::new().replicas(0).full_coverage(false).start();
    let mut env = Env::start(cluster, "  failover_hold: 300ms\n");
    let ch = "news";
    let mut sub = env.client();
    let r = sub.cmd(&["SUBSCRIBE", ch]);
    assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    let numsub = |env: &Env, i: usize| {
        env.node(i)
            .cmd(&["PUBSUB", "NUMSUB", ch])
            .as_array()
            .and_then(|a| a.get(1).and_then(Reply::as_int))
            .unwrap_or(0)
    };
    let primaries = env.cluster.primaries();
    let on = poll_until(Duration::from_secs(5), || {
        primaries.iter().copied().find(|&i| numsub(&env, i) == 1)
    })
    .expect("subscribed on a node");
    env.node(on).cmd(&["PUBLISH", ch, "first"]);
    assert_eq!(
        sub.read_reply().expect("message"),
        Reply::bulks(["message", ch, "first"])
    );

    env.cluster.nodes[on].kill9();
    let others: Vec<usize> = primaries.into_iter().filter(|&i| i != on).collect();
    let again = poll_until(Duration::from_secs(5), || {
        others.iter().copied().find(|&i| numsub(&env, i) == 1)
    });
    assert!(again.is_some(), "not subscribed again on another node");
    // The cluster broadcasts PUBLISH: a message published on any live node reaches the
    // client, once.
    for &i in &others {
        env.node(i).cmd(&["PUBLISH", ch, &format!("from {i}")]);
        assert_eq!(
            sub.read_reply().expect("message"),
            Reply::bulks(["message", ch, &format!("from {i}")])
        );
    }
    // Published through rampart: once its health checks took the killed node down, on a
    // node that is up (the channel's own shard has none).
    let mut publisher = env.client();
    let sent = poll_until(Duration::from_secs(10), || {
        publisher
            .cmd(&["PUBLISH", ch, "through"])
            .as_int()
            .map(|_| ())
    });
    assert!(sent.is_some(), "PUBLISH through rampart kept failing");
    assert_eq!(
        sub.read_reply().expect("message"),
        Reply::bulks(["message", ch, "through"])
    );
    assert_eq!(sub.cmd(&["PING"]), Reply::bulks(["pong", ""]));
}

#[test]
fn a_pattern_gets_a_broadcast_message_once_and_every_nodes_notifications() {
    let cluster = ClusterSetup::new().replicas(0).full_coverage(false).start();
    let mut env = Env::start(cluster, "");
    let primaries = env.cluster.primaries();
    for &i in &primaries {
        let r = env
            .node(i)
            .cmd(&["CONFIG", "SET", "notify-keyspace-events", "E$"]);
        assert_eq!(r, Reply::ok());
    }
    let mut sub = env.client();
    for pattern in ["news.*", "__keyevent@0__:*"] {
        let r = sub.cmd(&["PSUBSCRIBE", pattern]);
        assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    }
    // Subscribed on every node (each sends its own notifications).
    let everywhere = poll_until(Duration::from_secs(5), || {
        primaries
            .iter()
            .all(|&i| env.node(i).cmd(&["PUBSUB", "NUMPAT"]) == Reply::Int(2))
            .then_some(())
    });
    assert!(
        everywhere.is_some(),
        "patterns not subscribed on every node"
    );
    // Reads what arrives within 300 ms.
    let drain = |sub: &mut Client| {
        sub.set_read_timeout(Some(Duration::from_millis(300)));
        let mut got = Vec::new();
        while let Ok(r) = sub.read_reply() {
            got.push(r);
        }
        sub.set_read_timeout(Some(Duration::from_secs(10)));
        got
    };
    let pmessage = |pattern: &str, ch: &str, msg: &str| {
        Reply::Array(Some(
            ["pmessage", pattern, ch, msg].map(Reply::bulk).to_vec(),
        ))
    };
    // A message published on any node: every node hears it, the client gets it once.
    for &i in &primaries {
        env.node(i)
            .cmd(&["PUBLISH", "news.a", &format!("from {i}")]);
        assert_eq!(
            drain(&mut sub),
            vec![pmessage("news.*", "news.a", &format!("from {i}"))]
        );
    }
    // A key written on each primary: its node's notification, once.
    let mut c = env.client();
    for &i in &primaries {
        let key = env.cluster.key_on(i, "ev");
        assert_eq!(c.cmd(&["SET", &key, "v"]), Reply::ok());
        assert_eq!(
            drain(&mut sub),
            vec![pmessage("__keyevent@0__:*", "__keyevent@0__:set", &key)]
        );
    }
    // The node whose copies were passed on may go: another's are, still once.
    for &dead in &primaries[..2] {
        env.cluster.nodes[dead].kill9();
        let live = primaries[2];
        let once = poll_until(Duration::from_secs(5), || {
            env.node(live).cmd(&["PUBLISH", "news.b", "after"]);
            let got = drain(&mut sub);
            (!got.is_empty()).then_some(got)
        });
        assert_eq!(
            once,
            Some(vec![pmessage("news.*", "news.b", "after")]),
            "after node {dead} was killed"
        );
    }
}

#[test]
fn watch_follows_moved_to_the_slots_new_primary() {
    let env = Env::start(ClusterSetup::new().start(), "");
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let key = env.cluster.key_on(a, "balance");
    let slot = testkit::cluster_slot(key.as_bytes());
    let mut c = env.client();
    assert_eq!(c.cmd(&["SET", &key, "10"]), Reply::ok());
    env.move_slot(slot, a, b, &[&key]);
    // rampart's map still names `a`, which answers WATCH with MOVED: followed to `b`.
    assert_eq!(c.cmd(&["WATCH", &key]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["INCRBY", &key, "5"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(Some(vec![Reply::Int(15)])));
    assert_eq!(env.node(b).cmd(&["GET", &key]), Reply::bulk("15"));
    // The watch is held on `b` indeed: a write by another client there aborts the EXEC.
    assert_eq!(c.cmd(&["WATCH", &key]), Reply::ok());
    assert_eq!(env.client().cmd(&["SET", &key, "100"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["INCRBY", &key, "5"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(None));
    assert_eq!(env.node(b).cmd(&["GET", &key]), Reply::bulk("100"));
}

#[test]
fn watch_follows_ask_during_a_migration_and_exec_runs_on_the_importing_node() {
    let env = Env::start(ClusterSetup::new().start(), "");
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let key = env.cluster.key_on(a, "stock");
    let slot = testkit::cluster_slot(key.as_bytes());
    let mut c = env.client();
    assert_eq!(c.cmd(&["SET", &key, "3"]), Reply::ok());
    env.begin_move(slot, a, b);
    env.migrate(a, b, &[&key]);
    // The key is on `b`, the slot still `a`'s: `a` answers ASK, the watch goes to `b`.
    assert_eq!(c.cmd(&["WATCH", &key]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["DECR", &key]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(Some(vec![Reply::Int(2)])));
    env.finish_move(slot, b);
    assert_eq!(env.node(b).cmd(&["GET", &key]), Reply::bulk("2"));
}

#[test]
fn a_watched_transaction_with_keys_on_both_sides_of_a_migration_runs_nothing() {
    let env = Env::start(ClusterSetup::new().start(), "");
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let tag = env.cluster.key_on(a, "acct");
    let (moved, stayed) = (format!("{{{tag}}}:moved"), format!("{{{tag}}}:stayed"));
    let slot = testkit::cluster_slot(moved.as_bytes());
    let mut c = env.client();
    assert_eq!(c.cmd(&["SET", &moved, "1"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", &stayed, "1"]), Reply::ok());
    env.begin_move(slot, a, b);
    env.migrate(a, b, &[&moved]);
    // WATCH follows ASK to `b`; the transaction also names a key still on `a`: `b` refuses
    // EXEC whole (TRYAGAIN), nothing runs anywhere, and EXEC answers nil.
    assert_eq!(c.cmd(&["WATCH", &moved]), Reply::ok());
    let incrs = (env.calls(a, "incr"), env.calls(b, "incr"));
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["INCR", &moved]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["INCR", &stayed]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(None));
    assert_eq!((env.calls(a, "incr"), env.calls(b, "incr")), incrs);
    // Without WATCH the same transaction waits for the migration to end, then runs whole
    // on `b`, once.
    let finisher = {
        let stayed = stayed.clone();
        let (from, to) = (env.cluster.nodes[a].addr(), env.cluster.nodes[b].port());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let port = to.to_string();
            let mut c = Client::connect(&from);
            let r = c.cmd(&[
                "MIGRATE",
                "127.0.0.1",
                &port,
                "",
                "0",
                "5000",
                "KEYS",
                &stayed,
            ]);
            assert_eq!(r, Reply::ok());
        })
    };
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["INCR", &moved]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["INCR", &stayed]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Int(2), Reply::Int(2)]))
    );
    finisher.join().expect("finisher");
    env.finish_move(slot, b);
    assert_eq!(env.node(b).cmd(&["GET", &moved]), Reply::bulk("2"));
    assert_eq!(env.node(b).cmd(&["GET", &stayed]), Reply::bulk("2"));
    assert_eq!(
        env.calls(a, "incr"),
        incrs.0,
        "nothing ran on the old owner"
    );
}

#[test]
fn exec_after_the_watched_slot_moved_runs_nothing_and_answers_nil() {
    let env = Env::start(ClusterSetup::new().start(), "");
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let key = env.cluster.key_on(a, "seat");
    let slot = testkit::cluster_slot(key.as_bytes());
    let mut c = env.client();
    assert_eq!(c.cmd(&["SET", &key, "1"]), Reply::ok());
    assert_eq!(c.cmd(&["WATCH", &key]), Reply::ok());
    env.move_slot(slot, a, b, &[&key]);
    let incrs = (env.calls(a, "incr"), env.calls(b, "incr"));
    // The watch is on `a`, which no longer serves the slot: nothing runs, EXEC is nil.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["INCR", &key]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(None));
    assert_eq!(env.node(b).cmd(&["GET", &key]), Reply::bulk("1"));
    assert_eq!((env.calls(a, "incr"), env.calls(b, "incr")), incrs);
    // The client's retry watches again, on `b` now, and runs.
    assert_eq!(c.cmd(&["WATCH", &key]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["INCR", &key]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(Some(vec![Reply::Int(2)])));

    // Now with rampart's map already naming the new owner at EXEC: the slot moves back to
    // `a` while watched on `b`, and a request through rampart meets MOVED (the map is read
    // again) before EXEC.
    assert_eq!(c.cmd(&["WATCH", &key]), Reply::ok());
    env.move_slot(slot, b, a, &[&key]);
    let mut other = env.client();
    assert_eq!(other.cmd(&["GET", &key]), Reply::bulk("2"));
    let refreshed = poll_until(Duration::from_secs(5), || {
        let moved = env.moved(b);
        assert_eq!(other.cmd(&["GET", &key]), Reply::bulk("2"));
        (env.moved(b) == moved).then_some(())
    });
    assert!(refreshed.is_some(), "the map was not read again");
    let incrs = (env.calls(a, "incr"), env.calls(b, "incr"));
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["INCR", &key]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(None));
    assert_eq!((env.calls(a, "incr"), env.calls(b, "incr")), incrs);
    assert_eq!(env.node(a).cmd(&["GET", &key]), Reply::bulk("2"));

    // A RESP3 client gets RESP3's nil.
    let mut c3 = env.client();
    let hello = c3.cmd(&["HELLO", "3"]);
    assert!(!matches!(hello, Reply::Error(_)), "{hello:?}");
    assert_eq!(c3.cmd(&["WATCH", &key]), Reply::ok());
    env.move_slot(slot, a, b, &[&key]);
    assert_eq!(c3.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c3.cmd(&["INCR", &key]), Reply::simple("QUEUED"));
    assert_eq!(c3.cmd(&["EXEC"]), Reply::Bulk(None), "RESP3 null");
    assert_eq!(env.node(b).cmd(&["GET", &key]), Reply::bulk("2"));
}

#[test]
fn multi_exec_without_watch_whose_slot_moved_runs_whole_on_the_new_primary() {
    let env = Env::start(ClusterSetup::new().start(), "");
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let tag = env.cluster.key_on(a, "cart");
    let (k1, k2) = (format!("{{{tag}}}:items"), format!("{{{tag}}}:total"));
    let slot = testkit::cluster_slot(k1.as_bytes());
    let mut c = env.client();
    assert_eq!(c.cmd(&["SET", &k2, "0"]), Reply::ok());
    env.move_slot(slot, a, b, &[&k2]);
    let incrs = env.calls(a, "incrby");
    // The queued commands meet MOVED on `a`, EXEC aborts there with nothing run, and the
    // whole transaction runs on `b` once.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["RPUSH", &k1, "x"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["INCRBY", &k2, "7"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Int(1), Reply::Int(7)]))
    );
    assert_eq!(env.node(b).cmd(&["LLEN", &k1]), Reply::Int(1));
    assert_eq!(env.node(b).cmd(&["GET", &k2]), Reply::bulk("7"));
    assert_eq!(
        env.calls(a, "incrby"),
        incrs,
        "nothing ran on the old owner"
    );
    assert_eq!(env.calls(b, "incrby"), 1);
}

#[test]
fn a_watch_redirected_while_other_keys_are_watched_is_refused_not_passed_on() {
    let env = Env::start(ClusterSetup::new().start(), "");
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let k1 = env.cluster.key_on(a, "first");
    let k2 = (0..)
        .map(|i| env.cluster.key_on(a, &format!("second{i}-")))
        .find(|k| testkit::cluster_slot(k.as_bytes()) != testkit::cluster_slot(k1.as_bytes()))
        .expect("a key in another slot of a");
    let mut c = env.client();
    assert_eq!(c.cmd(&["WATCH", &k1]), Reply::ok());
    env.move_slot(testkit::cluster_slot(k2.as_bytes()), a, b, &[]);
    // `a` holds the watch on k1 and answers MOVED for k2: the watch cannot follow it.
    let r = c.cmd(&["WATCH", &k2]);
    let text = match &r {
        Reply::Error(e) => e.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        text.starts_with("ERR rampart: these keys live on another shard"),
        "{text}"
    );
    // The watch on k1 still holds.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", &k1, "v"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(Some(vec![Reply::ok()])));
    assert_eq!(env.node(a).cmd(&["GET", &k1]), Reply::bulk("v"));
}
