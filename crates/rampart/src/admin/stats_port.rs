//! The twemproxy-compatible stats listener: each connection receives one JSON document and is
//! closed, exactly like nutcracker's stats port, so existing exporters and dashboards work.
//!
//! Each server entry has nutcracker's fields, then rampart's from the one snapshot
//! ([`crate::topology::snapshot`]), numbers as every other field so exporters read them:
//! `server_up` (1 when the node is up) and `server_writable` (1 when it is the shard's primary
//! and takes writes now).

use std::fmt::Write as _;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::clock::unix_secs;
use crate::observe::stats::{PoolStat, ServerStat};
use crate::topology::snapshot::Snapshot;
use crate::topology::Shared;

/// Serve the stats port until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((mut s, _)) => {
                let doc = render(&shared);
                tokio::spawn(async move {
                    let _ = s.write_all(doc.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
            Err(e) => {
                tracing::warn!("stats accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// This machine's host name (`localhost` when it cannot be read).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The stats document: nutcracker's field names and nesting, built from the same counters.
pub fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let mut j = String::with_capacity(1024);
    let _ = write!(
        j,
        "{{\"service\":\"rampart\", \"source\":{}, \"version\":{}, \"uptime\":{}, \"timestamp\":{}, \"total_connections\":{}, \"curr_connections\":{}",
        quote(&hostname()),
        quote(env!("CARGO_PKG_VERSION")),
        shared.started.elapsed().as_secs(),
        unix_secs(),
        m.global_sum(|w| &w.total_connections),
        m.global_sum(|w| &w.curr_connections),
    );
    let snap = Snapshot::of(&shared.pools.load_full());
    for ps in &snap.pools {
        let p = &ps.pool;
        let _ = write!(j, ", {}: {{", quote(&p.conf.name));
        for (i, s) in PoolStat::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(j, "{sep}\"{}\":{}", s.key(), m.pool_sum(p.index, *s));
        }
        for shard in &ps.shards {
            for n in &shard.nodes {
                let node = &n.node;
                let _ = write!(j, ", {}: {{", quote(&n.stats_key));
                for (i, s) in ServerStat::ALL.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    let _ = write!(j, "{sep}\"{}\":{}", s.key(), node.sum(*s));
                    if *s == ServerStat::ServerConnections {
                        let at = node
                            .ejected_at_us
                            .load(std::sync::atomic::Ordering::Relaxed);
                        let _ = write!(j, ", \"server_ejected_at\":{at}");
                    }
                }
                let _ = write!(
                    j,
                    ", \"server_up\":{}, \"server_writable\":{}",
                    u8::from(n.up),
                    u8::from(n.writable),
                );
                j.push('}');
            }
        }
        j.push('}');
    }
    j.push_str("}\n");
    j
}
