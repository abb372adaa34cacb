//! A primary changed outside rampart, in a pool without Sentinel (`primary:` / `replicas:`).
//!
//! The configuration names each shard's primary, but the nodes may swap roles without
//! rampart: Redis' own `FAILOVER` command, an operator's `REPLICAOF`, an external failover
//! tool, or rampart's own switchover followed by a restart. The health checks see every
//! node's role (`ROLE`); this follower acts on them, as a role-checking TCP proxy in front of
//! the same nodes would: when the shard's primary answers as a replica *of* another node of
//! the shard (its `ROLE` names that node's port and host, or a name that resolves to the same
//! address), and that node answers as a primary, is in rotation and is the only one of the
//! shard that does, it becomes the shard's primary. Writes that arrived meanwhile waited in
//! the failover hold and go to it.
//!
//! What it does not do: pick a primary while the current one is down (only a node that
//! answers can say it is a replica, and a dead primary's replica promoted by hand may be one
//! of several candidates), move to a node the old primary does not follow (a replica
//! detached for maintenance while the primary was pointed elsewhere would take writes nobody
//! replicates), or choose between two nodes that both say they are primaries (a split
//! brain): the shard keeps its primary and its writes wait, or fail, as before.

use std::sync::Arc;

use rampart_config::ServerAddr;
use tokio_util::sync::CancellationToken;

use crate::topology::node::{resolve, NodeRt, Role};
use crate::topology::pool::{PoolRt, ShardView};

/// The node of `view` that should take its writes instead of its primary: the primary is up
/// and answers as a replica, and exactly one other node answers as a primary and is
/// routable. `None` otherwise.
pub fn successor(view: &ShardView) -> Option<usize> {
    let current = view.primary?;
    let p = view.nodes.get(current)?;
    if !p.is_up() || p.role() != Role::Replica {
        return None;
    }
    let mut found = None;
    for (i, n) in view.nodes.iter().enumerate() {
        if i != current && n.is_routable() && n.role() == Role::Primary {
            if found.is_some() {
                return None;
            }
            found = Some(i);
        }
    }
    found
}

/// Whether `old`, at its last check, replicated from `new`: the port its `ROLE` names is
/// `new`'s, and so is the host, as written or once both names are resolved (the file may
/// name a host that `ROLE` gives as an IP address, or the reverse).
pub async fn follows(old: &NodeRt, new: &NodeRt) -> bool {
    let Some((host, port)) = old.follows() else {
        return false;
    };
    let ServerAddr::Tcp {
        host: new_host,
        port: new_port,
    } = &new.addr
    else {
        return false;
    };
    if *new_port != port {
        return false;
    }
    if new_host.eq_ignore_ascii_case(&host) {
        return true;
    }
    let (a, b) = tokio::join!(resolve(new_host, port), resolve(&host, port));
    a.iter().any(|addr| b.contains(addr))
}

/// Follow role changes in `pool`'s shards, looking after every health check interval, until
/// `stop`.
pub async fn follow(pool: Arc<PoolRt>, stop: CancellationToken) {
    let every = pool.conf.health.interval;
    // Shards whose unconfirmed candidate was logged, so it is logged once.
    let mut told = vec![false; pool.shards.len()];
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        for (shard, told) in told.iter_mut().enumerate() {
            settle(&pool, shard, told).await;
        }
    }
}

/// Move `rt`'s primary to its [`successor`], if it has one and the old primary
/// [`follows`] it (not during a switchover, which moves it itself). `told`: a refused move
/// of this shard was logged.
async fn settle(pool: &PoolRt, shard: usize, told: &mut bool) {
    let rt = &pool.shards[shard];
    if rt.is_switching() {
        return;
    }
    let (old, new, next) = {
        let view = rt.view();
        let Some(next) = successor(&view) else {
            *told = false;
            return;
        };
        let Some(old) = view.primary.and_then(|i| view.nodes.get(i)).map(Arc::clone) else {
            return;
        };
        (old, Arc::clone(&view.nodes[next]), next)
    };
    if !follows(&old, &new).await {
        if !*told {
            *told = true;
            tracing::warn!(
                pool = %pool.conf.name,
                shard = %rt.name,
                primary = %old.label,
                follows = ?old.follows(),
                candidate = %new.label,
                "the primary answers as a replica of another node than the one that answers as a primary: the primary is not moved"
            );
        }
        return;
    }
    *told = false;
    // The view may have changed while names were resolved: move only from the same one.
    let view = rt.view();
    let same = view.primary.and_then(|i| view.nodes.get(i)).map(|n| n.id) == Some(old.id)
        && view.nodes.get(next).map(|n| n.id) == Some(new.id);
    if !same {
        return;
    }
    let moved = ShardView {
        nodes: view.nodes.clone(),
        primary: Some(next),
    };
    drop(view);
    rt.count_failover();
    // Nothing more is written to it (its checks closed its connections already when it first
    // answered as a replica); what it answered before is still read.
    old.drain_all();
    new.event(
        crate::observe::events::Kind::Failover,
        format!(
            "now the primary: it answers as one, and {} answers as its replica",
            old.label
        ),
    );
    tracing::warn!(
        pool = %pool.conf.name,
        shard = %rt.name,
        from = %old.label,
        to = %new.label,
        "primary switched: the primary answers as a replica of this node"
    );
    // Writes meanwhile wait in the failover hold, and for the Pub/Sub links to subscribe on
    // the new primary.
    pool.fail_over_to(shard, moved).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16) -> NodeRt {
        let addr = ServerAddr::Tcp {
            host: host.into(),
            port,
        };
        NodeRt::new(
            addr,
            format!("{host}:{port}"),
            (None, 100),
            ("p".into(), "s".into()),
            1,
            true,
        )
    }

    #[tokio::test]
    async fn the_old_primary_must_name_the_new_one_by_port_and_host() {
        let old = node("127.0.0.1", 6379);
        let new = node("127.0.0.1", 6380);
        assert!(!follows(&old, &new).await, "a primary follows nobody");
        old.set_follows(Some(("127.0.0.1".into(), 6380)));
        assert!(follows(&old, &new).await);
        // The file names the host, ROLE gives the address it resolves to.
        assert!(follows(&old, &node("localhost", 6380)).await);
        assert!(
            !follows(&old, &node("127.0.0.1", 6381)).await,
            "another port"
        );
        assert!(
            !follows(&old, &node("127.0.0.2", 6380)).await,
            "another host"
        );
    }
}
