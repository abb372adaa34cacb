//! What the backend user may run, checked once per pool in the background.
//!
//! With `admin_broadcast: false` rampart refuses FLUSHALL, FLUSHDB, CONFIG and SELECT from
//! clients (and CLUSTER, in every pool), but a script (`EVAL`, `FCALL`) runs with the rights
//! of the backend connection's user and can call them anyway; in a cluster pool CLUSTER is
//! checked too (a script's `CLUSTER SETSLOT`, `FORGET` or `RESET` changes the cluster). At start, and when a reload adds such a pool or changes its
//! handshake, one node of the pool is asked (`ACL WHOAMI`, then `ACL DRYRUN` per command, Redis
//! 7 and later) and a warning names the pool when the user may run any of them. Servers without
//! `ACL DRYRUN`, or users not allowed to run it, are skipped with a debug line.

use std::sync::Arc;
use std::time::Duration;

use crate::ha::link::{Link, Val};
use crate::topology::node::NodeRt;
use crate::topology::PoolRt;

/// The commands `admin_broadcast: false` refuses that a script could still run, each with
/// the arguments `ACL DRYRUN` checks it with.
const GUARDED: [(&str, &[&[u8]]); 5] = [
    ("FLUSHALL", &[b"FLUSHALL"]),
    ("FLUSHDB", &[b"FLUSHDB"]),
    ("CONFIG", &[b"CONFIG", b"SET", b"maxmemory", b"0"]),
    ("SELECT", &[b"SELECT", b"0"]),
    // Cluster pools only: a script may run CLUSTER too (SETSLOT, FORGET, RESET), which
    // rampart refuses from clients; rampart itself needs only CLUSTER NODES (and CLUSTER
    // FAILOVER for a switchover).
    ("CLUSTER", &[b"CLUSTER", b"SETSLOT", b"0", b"STABLE"]),
];

/// How many of [`GUARDED`] apply to a pool: the last only to cluster pools.
fn guarded(cluster: bool) -> &'static [(&'static str, &'static [&'static [u8]])] {
    &GUARDED[..if cluster {
        GUARDED.len()
    } else {
        GUARDED.len() - 1
    }]
}

/// How long to wait for a node to check (a Sentinel pool learns its nodes after start),
/// in tries one [`RETRY`] apart.
const TRIES: u32 = 20;
const RETRY: Duration = Duration::from_millis(500);

/// Start the check of every pool of `new` that refuses admin commands and that `old` did not
/// have in that form (added, or `admin_broadcast`, `redis_auth` or `redis_db` changed).
/// Returns at once; each check runs as its own task.
pub fn check_new(old: &[Arc<PoolRt>], new: &[Arc<PoolRt>]) {
    for p in new.iter().filter(|p| !p.conf.admin_broadcast) {
        let seen = old.iter().any(|o| {
            o.conf.name == p.conf.name
                && !o.conf.admin_broadcast
                && o.conf.redis_auth == p.conf.redis_auth
                && o.conf.redis_username == p.conf.redis_username
                && o.conf.redis_db == p.conf.redis_db
        });
        if !seen {
            tokio::spawn(check(Arc::clone(p)));
        }
    }
}

/// One node of the pool, once it has one.
async fn some_node(pool: &PoolRt) -> Option<Arc<NodeRt>> {
    for _ in 0..TRIES {
        let first = pool
            .shards
            .iter()
            .find_map(|s| s.view().nodes.first().cloned());
        if first.is_some() {
            return first;
        }
        tokio::time::sleep(RETRY).await;
    }
    None
}

/// Which of `GUARDED` the user may run, from the replies to `ACL DRYRUN`: `+OK` when it
/// may, a bulk string saying why not when it may not.
///
/// # Errors
/// An error reply (an older server without `ACL DRYRUN`, or a user not allowed to run it).
pub fn allowed(replies: &[Val]) -> Result<Vec<&'static str>, String> {
    let mut out = Vec::new();
    for ((name, _), r) in GUARDED.iter().zip(replies) {
        match r {
            Val::Err(e) => return Err(e.clone()),
            Val::Str(s) if s == b"OK" => out.push(*name),
            _ => {}
        }
    }
    Ok(out)
}

async fn check(pool: Arc<PoolRt>) {
    let name = &pool.conf.name;
    let Some(node) = some_node(&pool).await else {
        tracing::debug!(pool = %name, "backend user rights not checked: no node known");
        return;
    };
    let limit = pool.timeout();
    let mut c = match Link::open(&node.addr, &pool.handshake, limit).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(pool = %name, node = %node.label, "backend user rights not checked: {e}");
            return;
        }
    };
    let user = match c.call(&[&[b"ACL", b"WHOAMI"]], limit).await {
        Ok(r) => match r.first() {
            Some(Val::Str(u)) => u.clone(),
            other => {
                tracing::debug!(pool = %name, "backend user rights not checked: ACL WHOAMI answered {}", describe(other));
                return;
            }
        },
        Err(e) => {
            tracing::debug!(pool = %name, "backend user rights not checked: {e}");
            return;
        }
    };
    let guarded = guarded(pool.conf.is_cluster());
    let cmds: Vec<Vec<&[u8]>> = guarded
        .iter()
        .map(|(_, args)| {
            let mut v: Vec<&[u8]> = vec![b"ACL", b"DRYRUN", &user];
            v.extend_from_slice(args);
            v
        })
        .collect();
    let refs: Vec<&[&[u8]]> = cmds.iter().map(Vec::as_slice).collect();
    let replies = match c.call(&refs, limit).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(pool = %name, "backend user rights not checked: {e}");
            return;
        }
    };
    let user = String::from_utf8_lossy(&user);
    match allowed(&replies) {
        Ok(may) if may.is_empty() => {
            let all: Vec<&str> = guarded.iter().map(|(n, _)| *n).collect();
            tracing::debug!(pool = %name, "backend user '{user}' may not run {}", all.join(", "));
        }
        Ok(may) => {
            let cluster = if pool.conf.is_cluster() {
                " -cluster +cluster|nodes +cluster|failover"
            } else {
                ""
            };
            tracing::warn!(
                pool = %name,
                "pool {name}: the backend user '{user}' may run {}: admin_broadcast: false refuses them from clients, but a script (EVAL, FCALL) can still run them; restrict the user (ACL SETUSER {user} -flushall -flushdb -config -select{cluster}) to close that",
                may.join(", ")
            );
        }
        Err(e) => {
            tracing::debug!(pool = %name, "backend user rights not checked: ACL DRYRUN: {e}");
        }
    }
}

fn describe(v: Option<&Val>) -> String {
    match v {
        Some(Val::Err(e)) => e.clone(),
        Some(Val::Str(s)) => String::from_utf8_lossy(s).into_owned(),
        Some(Val::Int(n)) => n.to_string(),
        Some(Val::Nil) => "nil".into(),
        Some(Val::Arr(_)) => "an array".into(),
        None => "nothing".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dryrun_replies_say_which_commands_the_user_may_run() {
        let no = |c: &str| {
            Val::Str(format!("This user has no permissions to run the '{c}' command").into_bytes())
        };
        let ok = Val::Str(b"OK".to_vec());
        assert_eq!(
            allowed(&[ok.clone(), ok.clone(), ok.clone(), ok.clone()]),
            Ok(vec!["FLUSHALL", "FLUSHDB", "CONFIG", "SELECT"])
        );
        assert_eq!(
            allowed(&[no("flushall"), no("flushdb"), no("config|set"), ok.clone()]),
            Ok(vec!["SELECT"])
        );
        assert!(allowed(&[Val::Err("ERR unknown subcommand 'DRYRUN'".into())]).is_err());
        // A cluster pool asks about CLUSTER too; the others do not.
        assert_eq!(guarded(false).len(), 4);
        assert_eq!(guarded(true).last().map(|g| g.0), Some("CLUSTER"));
        assert_eq!(
            allowed(&[
                no("flushall"),
                no("flushdb"),
                no("config|set"),
                no("select"),
                ok
            ]),
            Ok(vec!["CLUSTER"])
        );
    }
}
