//! Writes acknowledged by replicas (`min_replica_acks`): with as many acknowledgements as the
//! shard has replicas, a kill -9 of the primary loses no acknowledged write, failover after
//! failover; and a write that too few replicas took gets an error saying so, not `+OK`.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::time::{Duration, Instant};

use ha::{replica_set, short_form, HaProxy, SentinelSetup, MASTER};
use load::WriteLoad;
use testkit::{poll_until, Client, RedisServer, Reply};

/// Kill -9 failovers in the test below.
const KILLS: usize = 10;

/// Four writers write through a Sentinel pool with `min_replica_acks: 2` over a primary and
/// two replicas. Ten times: both replicas freeze (SIGSTOP) for 200 ms while writes go on, the
/// primary is killed with kill -9, the replicas resume, Sentinel promotes one of them,
/// the killed server comes back empty as a replica of the new primary, and writing goes on.
/// At the end every acknowledged write is on the last primary.
#[test]
fn acknowledged_writes_survive_ten_kill_9_failovers() {
    let setup = SentinelSetup::start(
        "  failover_hold: 10s\n  min_replica_acks: 2\n  min_replica_acks_timeout: 500ms\n",
    );
    let SentinelSetup {
        primary,
        replicas,
        sentinels,
        proxy,
    } = setup;
    let mut nodes: Vec<RedisServer> = std::iter::once(primary).chain(replicas).collect();
    let started = Instant::now();
    let load = WriteLoad::start(&proxy.addr(), 4, Duration::from_secs(20));
    let mut current = nodes[0].port();
    let mut failovers = Vec::new();
    for round in 0..KILLS {
        assert!(
            load::progressed(|| load.acked(), 200, Duration::from_secs(20)),
            "round {round}: writes do not go on; log:\n{}",
            proxy.log()
        );
        // The replicas stop taking the replication stream for a moment before the kill: no
        // replica confirms the writes of that moment, so none of them may be acknowledged
        // (they wait for WAIT, and fail with the connection when the primary dies).
        for n in nodes.iter().filter(|n| n.port() != current) {
            n.stop();
        }
        std::thread::sleep(Duration::from_millis(200));
        let killed = Instant::now();
        let victim = nodes.iter_mut().find(|n| n.port() == current);
        victim
            .map(RedisServer::kill9)
            .expect("the primary is one of ours");
        for n in nodes.iter().filter(|n| n.port() != current) {
            n.cont();
        }
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
        let (back, new_primary): (Vec<_>, Vec<_>) = nodes.iter_mut().partition(|n| n.port() == old);
        let primary_port = new_primary
            .iter()
            .find(|n| n.port() == current)
            .map(|n| n.port())
            .expect("Sentinel promoted one of ours");
        for n in back {
            n.restart();
            n.cmd(&["REPLICAOF", "127.0.0.1", &primary_port.to_string()]);
            n.wait_replication_up(Duration::from_secs(20));
        }
    }
    assert!(
        load::progressed(|| load.acked(), 200, Duration::from_secs(20)),
        "writes do not go on after the last failover"
    );
    let report = load.stop();
    let last = nodes
        .iter()
        .find(|n| n.port() == current)
        .expect("the last primary is one of ours");
    let missing = load::missing_writes(last, &report.acks);
    let not_durable = report
        .errors
        .iter()
        .filter(|(_, e)| e.contains("may not be durable"))
        .count();
    println!(
        "{KILLS} kill -9 failovers in {:?} (each {:?}): {} writes acknowledged, {} errors \
         ({not_durable} of them 'may not be durable'), {} acknowledged writes missing",
        started.elapsed(),
        failovers,
        report.acks.len(),
        report.errors.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
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
