//! Writes acknowledged by replicas (`min_replica_acks`): with as many acknowledgements as the
//! shard has replicas, a kill -9 of the primary loses no acknowledged write, failover after
//! failover; without them the same kills lose writes the primary acknowledged; and a write
//! that too few replicas took gets an error saying so, not `+OK`.
//!
//! The replicas replicate from the primary through fault links that hold the replication
//! stream for [`LINK_DELAY`], as a network between hosts would: at the kill the links go down
//! with the primary, so what they still held never reaches a replica. The primary lists each
//! replica by the address it connected from (loopback) and the port the replica announces
//! (`REPLCONF listening-port`, its own port), so Sentinel sees the replicas' real addresses
//! and promotes one of them as usual. Sentinel reconfigures a replica whose primary address is
//! not the primary's once `failover-timeout` (5 s here) has passed since it saw the change, so
//! after each failover the test points the replicas through new links and kills within that
//! time.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::time::{Duration, Instant};

use ha::{replica_set, sentinel_field, short_form, HaProxy, SentinelSetup, MASTER};
use load::WriteLoad;
use testkit::{poll_until, Client, FaultLink, RedisServer, Reply};

/// Kill -9 failovers in the test with `min_replica_acks`.
const KILLS: usize = 10;

/// How long the links between primary and replicas hold the replication stream (each way).
const LINK_DELAY: Duration = Duration::from_millis(50);

/// What a run of kill -9 failovers left behind.
struct Outcome {
    acked: usize,
    lost: usize,
    errors: usize,
    not_durable: usize,
}

/// Points every node but the one on `primary` at it through a new fault link that delays by
/// [`LINK_DELAY`] once the replica's link is up (the sync itself passes undelayed); returns
/// the links.
fn slow_links(nodes: &[RedisServer], primary: u16) -> Vec<FaultLink> {
    let target = format!("127.0.0.1:{primary}");
    nodes
        .iter()
        .filter(|n| n.port() != primary)
        .map(|n| {
            let link = FaultLink::start(&target);
            assert_eq!(
                n.cmd(&["REPLICAOF", "127.0.0.1", &link.port().to_string()]),
                Reply::ok()
            );
            // The sync passes at full speed (a delaying link moves at most 64 KiB per
            // delay, and a loaded machine did not finish a full sync under write load in
            // 20 s); the stream after it is held.
            n.wait_replication_up(Duration::from_secs(60));
            link.delay(LINK_DELAY);
            link
        })
        .collect()
}

/// A full sync from `node`, once it is a primary, starts at once instead of after Redis'
/// default 5 s wait for more replicas (`repl-diskless-sync-delay`): the killed node comes
/// back empty and needs one after every failover.
fn quick_full_syncs(node: &RedisServer) {
    assert_eq!(
        node.cmd(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]),
        Reply::ok()
    );
}

/// Every sentinel names `primary` and is done with any failover, and every replica
/// replicates from `primary`.
fn failover_settled(sentinels: &[testkit::Sentinel], nodes: &[RedisServer], primary: u16) -> bool {
    let done = sentinels.iter().all(|s| {
        s.master_addr(MASTER).is_some_and(|(_, p)| p == primary)
            && sentinel_field(s, MASTER, "flags")
                .is_some_and(|f| !f.contains("failover_in_progress"))
    });
    let following = format!("master_port:{primary}\r\n");
    done && nodes.iter().filter(|n| n.port() != primary).all(|n| {
        let info = n.info("replication");
        info.contains(&following) && info.contains("master_link_status:up")
    })
}

/// `writers` writers write through a Sentinel pool with the pool lines `extra`, over a primary
/// and two replicas that replicate through slow links. `kills` times: the primary is killed
/// with kill -9 and its links go down with it, Sentinel promotes a replica, the killed server
/// comes back empty as a replica of the new primary, every replica is pointed at the new
/// primary through new slow links, and writing goes on. Then every acknowledged write is
/// looked up on the last primary.
fn kill_9_failovers_through_slow_links(extra: &str, kills: usize, writers: usize) -> Outcome {
    let SentinelSetup {
        primary,
        replicas,
        sentinels,
        proxy,
    } = SentinelSetup::start(&format!("  failover_hold: 10s\n{extra}"));
    let mut nodes: Vec<RedisServer> = std::iter::once(primary).chain(replicas).collect();
    nodes.iter().for_each(quick_full_syncs);
    let mut current = nodes[0].port();
    let mut links = slow_links(&nodes, current);
    let started = Instant::now();
    let load = WriteLoad::start(&proxy.addr(), writers, Duration::from_secs(20));
    let mut failovers = Vec::new();
    for round in 0..kills {
        assert!(
            load::progressed(|| load.acked(), 30, Duration::from_secs(20)),
            "round {round}: writes do not go on; log:\n{}",
            proxy.log()
        );
        let killed = Instant::now();
        let victim = nodes.iter_mut().find(|n| n.port() == current);
        victim
            .map(RedisServer::kill9)
            .expect("the primary is one of ours");
        // The network goes with the primary: what the links still hold is lost.
        links.clear();
        let next = poll_until(Duration::from_secs(30), || {
            sentinels[0]
                .master_addr(MASTER)
                .map(|(_, port)| port)
                .filter(|port| *port != current)
        })
        .unwrap_or_else(|| panic!("round {round}: no failover within 30 s"));
        failovers.push(killed.elapsed());
        let old = current;
        current = next;
        if let Some(back) = nodes.iter_mut().find(|n| n.port() == old) {
            back.restart();
            quick_full_syncs(back);
            back.cmd(&["REPLICAOF", "127.0.0.1", &current.to_string()]);
        }
        // Sentinel may fail over once more (a new primary that misses its first checks on a
        // busy machine looks down): follow whichever primary the sentinels settle on.
        let settled = poll_until(Duration::from_secs(30), || {
            let now = sentinels[0].master_addr(MASTER)?.1;
            failover_settled(&sentinels, &nodes, now).then_some(now)
        });
        let Some(settled) = settled else {
            let states: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}:\n{}", n.port(), n.info("replication")))
                .collect();
            let events: Vec<String> = sentinels
                .iter()
                .flat_map(|s| {
                    s.log()
                        .lines()
                        .filter(|l| l.contains(" +") || l.contains(" -"))
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!(
                "round {round}: the failover did not end with every replica following {current}:\n{}\nsentinels:\n{}",
                states.join("\n"),
                events.join("\n")
            );
        };
        current = settled;
        links = slow_links(&nodes, current);
        println!(
            "round {round}: back to writing {:?} after the kill",
            killed.elapsed()
        );
    }
    assert!(
        load::progressed(|| load.acked(), 100, Duration::from_secs(20)),
        "writes do not go on after the last failover"
    );
    let report = load.stop();
    let last = nodes
        .iter()
        .find(|n| n.port() == current)
        .expect("the last primary is one of ours");
    let lost = load::missing_writes(last, &report.acks).len();
    let not_durable = report
        .errors
        .iter()
        .filter(|(_, e)| e.contains("may not be durable"))
        .count();
    println!(
        "pool lines {extra:?}: {kills} kill -9 failovers in {:?} (each {:?}): {} writes \
         acknowledged, {} errors ({not_durable} of them 'may not be durable'), {lost} \
         acknowledged writes lost",
        started.elapsed(),
        failovers,
        report.acks.len(),
        report.errors.len(),
    );
    Outcome {
        acked: report.acks.len(),
        lost,
        errors: report.errors.len(),
        not_durable,
    }
}

/// Without `min_replica_acks` the primary acknowledges a write before the replicas have it:
/// each kill -9 loses what the links still held (the control for the test below). Two
/// writers: unconfirmed writes are fast, and more would outrun what the links carry.
#[test]
fn without_min_replica_acks_a_kill_9_loses_acknowledged_writes() {
    let out = kill_9_failovers_through_slow_links("", 3, 2);
    assert!(out.acked > 0, "nothing was written");
    assert!(
        out.lost > 0,
        "{} writes acknowledged and none lost across 3 kills: the links did not hold the \
         replication stream back, so this run shows nothing",
        out.acked
    );
}

/// With `min_replica_acks: 2` (both replicas) and the same slow links, ten kill -9
/// failovers lose no acknowledged write: the writes the links held at each kill were not
/// acknowledged (they waited for `WAIT` and failed with the connection or its timeout).
#[test]
fn acknowledged_writes_survive_ten_kill_9_failovers() {
    let out = kill_9_failovers_through_slow_links(
        "  min_replica_acks: 2\n  min_replica_acks_timeout: 1s\n",
        KILLS,
        8,
    );
    assert!(out.acked > 0, "nothing was written");
    assert_eq!(
        out.lost, 0,
        "{} of {} acknowledged writes lost ({} errors, {} not durable)",
        out.lost, out.acked, out.errors, out.not_durable
    );
}

/// A write that reached fewer replicas than `min_replica_acks` within the timeout is
/// answered with an error naming how many had it (it was applied on the primary and is not
/// sent again); reads are answered as usual; once the replica is back, writes say OK.
#[test]
fn a_write_too_few_replicas_took_gets_an_error_not_ok() {
    let (primary, replicas) = replica_set(1);
    let body = short_form(
        &primary.addr(),
        &[replicas[0].addr()],
        "  min_replica_acks: 1\n  min_replica_acks_timeout: 200ms\n",
    );
    let proxy = HaProxy::start(&body);
    let addrs = vec![primary.addr(), replicas[0].addr()];
    proxy.wait_up(&addrs, Duration::from_secs(10));
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    // The replica stops taking the replication stream: WAIT counts 0 of 1.
    replicas[0].stop();
    let t0 = Instant::now();
    let replies = c.pipeline(&[vec!["SET", "k", "2"], vec!["GET", "k"]]);
    let waited = t0.elapsed();
    replicas[0].cont();
    assert_eq!(
        replies[0],
        Reply::Error(
            "ERR rampart: write applied on the primary but acknowledged by only 0 of 1 \
             replicas within 200ms; it may not be durable"
                .into()
        ),
        "after {waited:?}"
    );
    assert_eq!(
        replies[1],
        Reply::bulk("2"),
        "the read is answered as usual"
    );
    assert_eq!(
        primary.cmd(&["GET", "k"]),
        Reply::bulk("2"),
        "applied on the primary, not undone"
    );
    replicas[0].wait_replication_up(Duration::from_secs(10));
    assert_eq!(c.cmd(&["SET", "k", "3"]), Reply::ok());
    assert_eq!(replicas[0].cmd(&["GET", "k"]), Reply::bulk("3"));
}

/// EXEC of a WATCHed transaction runs on a connection of its own; with `min_replica_acks`
/// it is answered only after `WAIT` there, and a transaction too few replicas took gets the
/// same error as any write, not its array.
#[test]
fn a_watched_exec_too_few_replicas_took_gets_an_error_not_its_array() {
    let (primary, replicas) = replica_set(1);
    let body = short_form(
        &primary.addr(),
        &[replicas[0].addr()],
        "  min_replica_acks: 1\n  min_replica_acks_timeout: 200ms\n",
    );
    let proxy = HaProxy::start(&body);
    let addrs = vec![primary.addr(), replicas[0].addr()];
    proxy.wait_up(&addrs, Duration::from_secs(10));
    let mut c = Client::connect(&proxy.addr());
    let transaction = |c: &mut Client, v: &str| {
        c.pipeline(&[
            vec!["WATCH", "k"],
            vec!["MULTI"],
            vec!["SET", "k", v],
            vec!["EXEC"],
        ])
    };
    let ok = transaction(&mut c, "1");
    assert_eq!(ok[3], Reply::Array(Some(vec![Reply::ok()])), "{ok:?}");
    replicas[0].stop();
    let replies = transaction(&mut c, "2");
    replicas[0].cont();
    assert_eq!(
        replies[3],
        Reply::Error(
            "ERR rampart: write applied on the primary but acknowledged by only 0 of 1 \
             replicas within 200ms; it may not be durable"
                .into()
        ),
        "{replies:?}"
    );
    assert_eq!(
        primary.cmd(&["GET", "k"]),
        Reply::bulk("2"),
        "applied on the primary, not undone"
    );
    replicas[0].wait_replication_up(Duration::from_secs(10));
    let again = transaction(&mut c, "3");
    assert_eq!(again[3], Reply::Array(Some(vec![Reply::ok()])), "{again:?}");
    assert_eq!(replicas[0].cmd(&["GET", "k"]), Reply::bulk("3"));
}
