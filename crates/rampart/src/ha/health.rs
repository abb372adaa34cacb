//! Active health checks: PING, ROLE and INFO replication on every node of a pool with replicas
//! or Sentinel, on a jittered interval, with rise/fall thresholds.
//!
//! A TCP connect is not a health check: a frozen redis-server still accepts connections. A node
//! is healthy when all three replies arrive, correct, within the check timeout. Nodes start down
//! and serve only after `rise` good checks in a row; `fall` bad ones take them out. While a node
//! is between states the checks run at the faster interval, so a dead node leaves rotation and
//! a recovered one returns quickly. A replica also needs its replication link up, no sync in
//! progress, and a lag within `max_replica_lag` before it serves reads; the lag is measured from
//! replication offsets ([`crate::ha::lag`]). A replica whose link is down (its primary
//! unreachable) keeps serving, stale, while the link has been down for at most `max_stale`
//! (`master_link_down_since_seconds`): reads stay up while Sentinel promotes a successor. A
//! replica that is in a full sync or loading (`LOADING` replies) never serves.
//!
//! A node running a script or function past its `busy-reply-threshold` answers `BUSY` to
//! the checks (and to every client): it is alive, and taking it out would turn Redis' own
//! error into rampart's "no node" or a failover hold for every client, and in a cluster
//! pool would look like a failover. Such a check counts neither way: the node keeps the
//! state it had, and clients get the server's `BUSY` as they would directly, except that a
//! busy replica serves no reads while another node of its shard can (`NodeRt::is_busy`).

use std::sync::Arc;
use std::time::Duration;

use rampart_config::HealthCheck;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ha::lag;
use crate::ha::link::{Link, OpenError, Val};
use crate::handshake::{auth_error, Handshake};
use crate::topology::node::{NodeRt, ReplicaRules, Role};

/// What one check learned.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    /// The node's role.
    pub role: Role,
    /// For a replica: may serve reads.
    pub replica_ok: bool,
    /// For a replica: how far behind its primary it is (`None` until its primary's offsets
    /// have been seen).
    pub lag: Option<lag::Lag>,
    /// For a replica whose replication link is down after having been up: for how long, in
    /// seconds (`master_link_down_since_seconds`); `None` while the link is up or was never up.
    pub link_down_s: Option<u64>,
    /// For a replica: the primary it replicates from, as its `ROLE` names it (host as given
    /// to `REPLICAOF`, port); `None` for a primary or when `ROLE` does not say.
    pub follows: Option<(String, u16)>,
}

impl Checked {
    /// Record what this check learned on `node`; the check took `took`.
    fn record(&self, node: &NodeRt, took: Duration) {
        node.set_checked(self.role, self.replica_ok, took.as_micros() as u64);
        node.set_lag(self.lag.map(|l| l.ms), self.lag.map(|l| l.bytes));
        node.set_link_down(self.link_down_s);
        node.set_follows(self.follows.clone());
    }
}

/// How often a check connection is replaced, so DNS names are looked up again.
const RERESOLVE: Duration = Duration::from_secs(30);

/// The `BUSY` error among check replies, if the node answered one (a script or function
/// running past `busy-reply-threshold`).
pub fn busy(replies: &[Val]) -> Option<&str> {
    replies.iter().find_map(|r| match r {
        Val::Err(e) if e.starts_with("BUSY ") || e == "BUSY" => Some(e.as_str()),
        _ => None,
    })
}

/// Interpret the replies to PING, ROLE, INFO replication.
///
/// # Errors
/// The reason the node is not healthy.
pub fn judge(replies: &[Val], rules: ReplicaRules) -> Result<Checked, String> {
    let [ping, role, info] = replies else {
        return Err("short reply".into());
    };
    // NOAUTH or WRONGPASS on any of them (for example a password set on the server that the
    // pool does not have): say so in words.
    let refused = replies.iter().find_map(|r| match r {
        Val::Err(e) => auth_error(e),
        _ => None,
    });
    if let Some(e) = refused {
        return Err(e.to_string());
    }
    match ping {
        Val::Str(s) if s == b"PONG" => {}
        Val::Err(e) => return Err(format!("PING: {e}")),
        other => return Err(format!("PING answered {}, not PONG", other.describe())),
    }
    let kind = role.items().first().and_then(Val::text).unwrap_or_default();
    let info = info.text().unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let offset = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    let replid = field("master_replid").unwrap_or_default();
    match kind.as_str() {
        "master" => {
            if let Some(o) = offset("master_repl_offset") {
                lag::primary_seen(&replid, o);
            }
            Ok(Checked {
                role: Role::Primary,
                replica_ok: false,
                lag: None,
                link_down_s: None,
                follows: None,
            })
        }
        "slave" => {
            let link_up = field("master_link_status").as_deref() == Some("up");
            let syncing = field("master_sync_in_progress").as_deref() == Some("1");
            let lag = offset("slave_repl_offset").and_then(|o| lag::replica_lag(&replid, o));
            let within = lag.is_some_and(|l| l.ms <= rules.max_lag.as_millis() as u64);
            // -1 (a replica that never had its link up since it started or was last made a
            // replica) does not parse: it has nothing to serve.
            let link_down_s = (!link_up)
                .then(|| offset("master_link_down_since_seconds"))
                .flatten();
            let stale_ok = link_down_s
                .is_some_and(|s| !rules.max_stale.is_zero() && s <= rules.max_stale.as_secs());
            // ROLE of a replica: slave, the primary's host, its port, the link state, the
            // offset.
            let follows = match role.items() {
                [_, host, Val::Int(port), ..] => host
                    .text()
                    .zip(u16::try_from(*port).ok())
                    .filter(|(h, _)| !h.is_empty()),
                _ => None,
            };
            Ok(Checked {
                role: Role::Replica,
                replica_ok: !syncing && if link_up { within } else { stale_ok },
                lag,
                link_down_s,
                follows,
            })
        }
        _ => match role {
            Val::Err(e) => Err(format!("ROLE: {e}")),
            _ => Err(format!("ROLE: unexpected role '{kind}'")),
        },
    }
}

/// Run the checks of one node until `stop`; every check connection starts with `handshake`.
/// The settings are those of the pool when the task starts: a reload that changes them stops
/// this task and starts another (the node's state carries over; its streak starts again).
pub async fn run(
    node: Arc<NodeRt>,
    hc: HealthCheck,
    rules: ReplicaRules,
    handshake: Arc<Handshake>,
    stop: CancellationToken,
) {
    let mut conn: Option<Link> = None;
    let mut good = 0u32;
    let mut bad = 0u32;
    let mut believed_up = node.is_up();
    // Answering BUSY (see the module docs): logged when it starts and ends.
    let mut was_busy = false;
    // Reconnect now and then so a DNS name is resolved again even when nothing fails
    // (managed services move their endpoints between addresses).
    let mut conn_since = Instant::now();
    loop {
        if conn_since.elapsed() > RERESOLVE {
            conn = None;
            conn_since = Instant::now();
        }
        let changing = (believed_up && bad > 0) || (!believed_up && good > 0);
        let base = if changing {
            hc.fast_interval
        } else {
            hc.interval
        };
        let spread = (base.as_micros() as f64 * hc.jitter) as u64;
        let wait = base + Duration::from_micros(crate::rand::below(spread.max(1)));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        if believed_up && !node.is_up() {
            // Taken out by passive failures: it must earn `rise` good checks again.
            believed_up = false;
            good = 0;
        }
        let started = Instant::now();
        // A reload that changes the settings replaces this task: end at once, mid-check too.
        let result = tokio::select! {
            r = check(&node, &mut conn, &hc, rules, &handshake) => r,
            _ = stop.cancelled() => return,
        };
        if let Ok(None) = result {
            if !was_busy {
                was_busy = true;
                node.set_busy(true);
                tracing::info!(node = %node.label, "node busy running a script (BUSY): kept as it was");
            }
            continue;
        }
        if was_busy {
            was_busy = false;
            node.set_busy(false);
            tracing::info!(node = %node.label, "node no longer busy");
        }
        match result {
            Ok(None) => {}
            Ok(Some(c)) => {
                if node.role() == Role::Primary && c.role == Role::Replica {
                    // A primary endpoint that now answers as a replica (a DNS primary endpoint
                    // after a failover, or a demoted node): drop every connection so the next
                    // ones resolve the name again, and stop writing to it. The replies it
                    // already wrote (a write it took, or READONLY) are read first.
                    tracing::warn!(node = %node.label, "node now says it is a replica; draining its connections");
                    node.drain_all();
                    conn = None;
                }
                c.record(&node, started.elapsed());
                good = good.saturating_add(1);
                bad = 0;
                if !believed_up && good >= hc.rise && !node.is_ejected() {
                    believed_up = true;
                    if node.set_up(true) {
                        tracing::info!(node = %node.label, role = %c.role, "node up after {good} good checks");
                        node.event(
                            crate::observe::events::Kind::NodeUp,
                            format!("up after {good} good checks (as {})", c.role),
                        );
                    }
                }
            }
            Err(why) => {
                conn = None;
                node.set_error(&why);
                if why.contains("LOADING") {
                    // Loading a data set (after a full sync, or at start): it answers nothing
                    // but errors until done, so it leaves the read rotation at once.
                    node.refuse_reads();
                }
                bad = bad.saturating_add(1);
                good = 0;
                if believed_up && bad >= hc.fall {
                    believed_up = false;
                    if node.set_up(false) {
                        tracing::warn!(node = %node.label, "node down after {bad} failed checks: {why}");
                        node.event(
                            crate::observe::events::Kind::NodeDown,
                            format!("down after {bad} failed checks: {why}"),
                        );
                    }
                }
            }
        }
    }
}

/// Check `node`, of a pool not published yet (a cluster pool a reload moves to another
/// cluster), `rise` times `fast_interval` apart, each within `timeout`, as its checks would;
/// when all pass it is marked up now, so the pool serves from its first request as the one
/// it replaces did. A node that fails one stays down until its checks (started with the
/// pool) bring it up. Returns whether it is up.
pub async fn rise_now(
    node: Arc<NodeRt>,
    hc: HealthCheck,
    rules: ReplicaRules,
    handshake: Arc<Handshake>,
) -> bool {
    let mut conn: Option<Link> = None;
    for i in 0..hc.rise.max(1) {
        if i > 0 {
            tokio::time::sleep(hc.fast_interval).await;
        }
        let started = Instant::now();
        match check(&node, &mut conn, &hc, rules, &handshake).await {
            Ok(Some(c)) => {
                c.record(&node, started.elapsed());
            }
            _ => return false,
        }
    }
    node.set_up(true);
    true
}

/// One check of `node`: what it learned, or `None` when the node answered `BUSY`.
async fn check(
    node: &NodeRt,
    conn: &mut Option<Link>,
    hc: &HealthCheck,
    rules: ReplicaRules,
    handshake: &Handshake,
) -> Result<Option<Checked>, String> {
    let deadline = Instant::now() + hc.timeout;
    if conn.is_none() {
        let c = match Link::open(&node.addr, handshake, hc.timeout).await {
            Ok(c) => c,
            Err(OpenError::Refused(e)) if e.is_busy() => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        *conn = Some(c);
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let replies = c
        .call(&[&[b"PING"], &[b"ROLE"], &[b"INFO", b"replication"]], left)
        .await
        .map_err(|e| format!("check: {e}"))?;
    // NOAUTH or WRONGPASS to the checks themselves (a password the pool does not have):
    // refused credentials, followed like a refused AUTH.
    if let Some(e) = replies.iter().find_map(|r| match r {
        Val::Err(e) => auth_error(e),
        _ => None,
    }) {
        handshake.note_refused(&node.addr, &e.to_string());
    }
    if busy(&replies).is_some() {
        return Ok(None);
    }
    let checked = judge(&replies, rules)?;
    handshake.note_accepted(&node.addr);
    Ok(Some(checked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::link::parse;

    /// The default rules with `max_replica_lag` of `secs`.
    fn lag_within(secs: u64) -> ReplicaRules {
        ReplicaRules {
            max_lag: Duration::from_secs(secs),
            max_stale: Duration::from_secs(30),
        }
    }

    fn info(s: &str) -> Val {
        Val::Str(s.as_bytes().to_vec())
    }

    fn primary_role() -> Val {
        parse(b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")
    }

    fn replica_role() -> Val {
        parse(b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:100\r\n")
    }

    #[test]
    fn an_idle_caught_up_replica_serves_reads_however_long_ago_its_primary_wrote() {
        let primary =
            info("role:master\r\nmaster_replid:health-test-idle\r\nmaster_repl_offset:4200\r\n");
        let seen = judge(
            &[Val::Str(b"PONG".to_vec()), primary_role(), primary],
            lag_within(2),
        );
        assert_eq!(seen.map(|c| c.role), Ok(Role::Primary));
        // master_last_io_seconds_ago is up to 10 s on an idle link: it does not count.
        let r = judge(
            &[Val::Str(b"PONG".to_vec()), replica_role(), info("role:slave\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:9\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:4200\r\nmaster_replid:health-test-idle\r\n")],
            lag_within(2),
        );
        assert_eq!(
            r,
            Ok(Checked {
                role: Role::Replica,
                replica_ok: true,
                lag: Some(lag::Lag { ms: 0, bytes: 0 }),
                link_down_s: None,
                follows: Some(("127.0.0.1".into(), 6379)),
            })
        );
    }

    #[test]
    fn a_replica_with_its_link_down_or_an_unmeasured_lag_does_not() {
        let primary =
            info("role:master\r\nmaster_replid:health-test-down\r\nmaster_repl_offset:10\r\n");
        let _ = judge(
            &[Val::Str(b"PONG".to_vec()), primary_role(), primary],
            lag_within(10),
        );
        let down = judge(
            &[
                Val::Str(b"PONG".to_vec()),
                replica_role(),
                info("master_link_status:down\r\nslave_repl_offset:10\r\nmaster_replid:health-test-down\r\n"),
            ],
            lag_within(10),
        );
        assert!(
            matches!(
                down,
                Ok(Checked {
                    replica_ok: false,
                    ..
                })
            ),
            "{down:?}"
        );
        let unknown = judge(
            &[
                Val::Str(b"PONG".to_vec()),
                replica_role(),
                info("master_link_status:up\r\nslave_repl_offset:10\r\nmaster_replid:health-test-never-seen\r\n"),
            ],
            lag_within(10),
        );
        assert_eq!(
            unknown,
            Ok(Checked {
                role: Role::Replica,
                replica_ok: false,
                lag: None,
                link_down_s: None,
                follows: Some(("127.0.0.1".into(), 6379)),
            })
        );
    }

    fn replica_with(rules: ReplicaRules, id: &str, fields: &str) -> Result<Checked, String> {
        let primary = info(&format!(
            "role:master\r\nmaster_replid:{id}\r\nmaster_repl_offset:10\r\n"
        ));
        let _ = judge(
            &[Val::Str(b"PONG".to_vec()), primary_role(), primary],
            rules,
        );
        judge(
            &[
                Val::Str(b"PONG".to_vec()),
                replica_role(),
                info(&format!(
                    "role:slave\r\n{fields}slave_repl_offset:10\r\nmaster_replid:{id}\r\n"
                )),
            ],
            rules,
        )
    }

    #[test]
    fn a_replica_whose_primary_is_gone_serves_stale_up_to_max_stale() {
        let rules = lag_within(10);
        let down = |secs: i64| {
            replica_with(
                rules,
                "health-test-stale",
                &format!("master_link_status:down\r\nmaster_link_down_since_seconds:{secs}\r\nmaster_sync_in_progress:0\r\n"),
            )
        };
        assert_eq!(
            down(3),
            Ok(Checked {
                role: Role::Replica,
                replica_ok: true,
                lag: Some(lag::Lag { ms: 0, bytes: 0 }),
                link_down_s: Some(3),
                follows: Some(("127.0.0.1".into(), 6379)),
            })
        );
        assert_eq!(down(30).map(|c| c.replica_ok), Ok(true));
        assert_eq!(down(31).map(|c| c.replica_ok), Ok(false), "past max_stale");
        assert_eq!(
            down(-1).map(|c| (c.replica_ok, c.link_down_s)),
            Ok((false, None)),
            "a link never up has nothing to serve"
        );
        let never = ReplicaRules {
            max_stale: Duration::ZERO,
            ..rules
        };
        let zero = replica_with(
            never,
            "health-test-stale",
            "master_link_status:down\r\nmaster_link_down_since_seconds:0\r\n",
        );
        assert_eq!(zero.map(|c| c.replica_ok), Ok(false), "max_stale 0");
    }

    #[test]
    fn a_replica_in_a_full_sync_never_serves() {
        for fields in [
            "master_link_status:down\r\nmaster_link_down_since_seconds:1\r\nmaster_sync_in_progress:1\r\n",
            "master_link_status:up\r\nmaster_sync_in_progress:1\r\n",
        ] {
            let r = replica_with(lag_within(10), "health-test-sync", fields);
            assert_eq!(r.map(|c| c.replica_ok), Ok(false), "{fields}");
        }
    }

    #[test]
    fn an_authentication_error_is_named() {
        let r = judge(
            &[
                Val::Err("NOAUTH Authentication required.".into()),
                Val::Err("NOAUTH Authentication required.".into()),
                Val::Err("NOAUTH Authentication required.".into()),
            ],
            lag_within(1),
        );
        assert_eq!(
            r,
            Err("authentication required (NOAUTH Authentication required.)".into())
        );
    }

    #[test]
    fn busy_is_told_apart_from_failures() {
        let busy = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
        let replies = [
            Val::Err(busy.into()),
            Val::Err(busy.into()),
            Val::Err(busy.into()),
        ];
        assert_eq!(super::busy(&replies), Some(busy));
        let loading = [
            Val::Err("LOADING Redis is loading".into()),
            Val::Nil,
            Val::Nil,
        ];
        assert_eq!(super::busy(&loading), None);
        assert_eq!(
            super::busy(&[Val::Err("BUSYKEY Target key name already exists.".into())]),
            None
        );
    }

    #[test]
    fn loading_and_bad_replies_are_failures() {
        let r = judge(
            &[
                Val::Err("LOADING Redis is loading".into()),
                Val::Nil,
                Val::Nil,
            ],
            lag_within(1),
        );
        assert!(r.unwrap_err().contains("LOADING"));
        let role = parse(b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");
        let ok = judge(
            &[Val::Str(b"PONG".to_vec()), role, info("role:master\r\n")],
            lag_within(1),
        );
        assert_eq!(ok.map(|c| c.role), Ok(Role::Primary));
    }
}
