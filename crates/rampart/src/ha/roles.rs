//! A primary changed outside rampart, in a pool without Sentinel (`primary:` / `replicas:`).
//!
//! The configuration names each shard's primary, but the nodes may swap roles without
//! rampart: Redis' own `FAILOVER` command, an operator's `REPLICAOF`, an external failover
//! tool, or rampart's own switchover followed by a restart. The health checks see every
//! node's role (`ROLE`); this follower acts on them, as a role-checking TCP proxy in front of
//! the same nodes would: when the shard's primary answers as a replica and exactly one other
//! node of the shard answers as a primary and is in rotation, that node becomes the shard's
//! primary. Writes that arrived meanwhile waited in the failover hold and go to it.
//!
//! What it does not do: pick a primary while the current one is down (only a node that
//! answers can say it is a replica, and a dead primary's replica promoted by hand may be one
//! of several candidates), or choose between two nodes that both say they are primaries (a
//! split brain): the shard keeps its primary and its writes wait, or fail, as before.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::topology::node::Role;
use crate::topology::pool::{PoolRt, ShardRt, ShardView};

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

/// Follow role changes in `pool`'s shards, looking after every health check interval, until
/// `stop`.
pub async fn follow(pool: Arc<PoolRt>, stop: CancellationToken) {
    let every = pool.conf.health.interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        for rt in &pool.shards {
            settle(&pool, rt);
        }
    }
}

/// Move `rt`'s primary to its [`successor`], if it has one (not during a switchover, which
/// moves it itself).
fn settle(pool: &PoolRt, rt: &ShardRt) {
    if rt.is_switching() {
        return;
    }
    let view = rt.view();
    let Some(next) = successor(&view) else {
        return;
    };
    let old = view.primary.and_then(|i| view.nodes.get(i)).map(Arc::clone);
    let new = Arc::clone(&view.nodes[next]);
    rt.set_view(ShardView {
        nodes: view.nodes.clone(),
        primary: Some(next),
    });
    rt.count_failover();
    let from = old.as_ref().map_or_else(String::new, |o| o.label.clone());
    if let Some(o) = old {
        // Nothing more is written to it (its checks closed its connections already when it
        // first answered as a replica).
        o.close_all();
    }
    new.event(
        crate::observe::events::Kind::Failover,
        format!("now the primary: it answers as one, and {from} answers as a replica"),
    );
    tracing::warn!(
        pool = %pool.conf.name,
        shard = %rt.name,
        from = %from,
        to = %new.label,
        "primary switched: the configured primary answers as a replica"
    );
}
