//! Health checks of the shards of a cache pool that fails open: while a shard's circuit is
//! open (`topology::circuit`), a PING goes to its primary every health-check `interval`; the
//! first PONG within the check `timeout` closes the circuit. This is the only way it closes:
//! client traffic never goes to a shard whose circuit is open.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::ha::link::{Link, Val};
use crate::handshake::Handshake;
use crate::observe::events::{record, Kind};
use crate::topology::node::NodeRt;
use crate::topology::PoolRt;

/// Check the open circuits of `pool` until `stop`.
pub async fn watch(pool: Arc<PoolRt>, stop: CancellationToken) {
    let hc = pool.conf.health;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(hc.interval) => {}
            _ = stop.cancelled() => return,
        }
        for s in pool.shards.iter().filter(|s| s.circuit.is_open()) {
            let view = s.view();
            let Some(node) = view.primary.and_then(|i| view.nodes.get(i)) else {
                continue;
            };
            let ok = tokio::select! {
                ok = answers(node, &pool.handshake, hc.timeout) => ok,
                _ = stop.cancelled() => return,
            };
            if ok && s.circuit.close() {
                tracing::info!(pool = %pool.conf.name, shard = %s.name, "circuit closed: a health check got a reply");
                record(
                    Kind::CircuitClosed,
                    &pool.conf.name,
                    &s.name,
                    &node.addr.to_string(),
                    "circuit closed: a health check got a reply (fail_open)",
                );
            }
        }
    }
}

/// `node` answers PING with PONG within `limit` (connection and handshake included).
async fn answers(node: &NodeRt, handshake: &Handshake, limit: std::time::Duration) -> bool {
    let started = tokio::time::Instant::now();
    let Ok(mut link) = Link::open(&node.addr, handshake, limit).await else {
        return false;
    };
    let left = limit.saturating_sub(started.elapsed());
    match link.call(&[&[b"PING"]], left).await {
        Ok(r) => matches!(r.as_slice(), [Val::Str(s)] if s == b"PONG"),
        Err(_) => false,
    }
}
