//! Health as the admin interface reports it.
//!
//! Nodes of pools with replicas or Sentinel have active health checks (`crate::ha::health`); their
//! state is read straight from the node. Nodes of twemproxy `servers:` pools are never checked
//! (twemproxy semantics: the ring changes only through `auto_eject_hosts`), so the admin
//! interface PINGs them itself, once a second over one kept-open connection per node, to show
//! them as up or DOWN and to answer `/readyz`. The probe only observes: routing never reads it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::ha::link::{CtlConn, Val};
use crate::handshake::{auth_error, Handshake};
use crate::topology::node::NodeRt;
use crate::topology::Shared;

const INTERVAL: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_millis(500);

/// A node's health as reported by the admin interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Passes its checks (health checks, or the admin probe for unchecked nodes).
    pub up: bool,
    /// Round trip of the last check, µs.
    pub check_us: u64,
    /// When the last check finished (ms since start; 0 = never).
    pub last_check_ms: u64,
    /// Why the last check failed (empty when it passed).
    pub last_error: String,
    /// Which checks these are: `health-check` or `admin-probe`.
    pub source: &'static str,
}

/// Results of the admin probe, by node id.
#[derive(Debug, Default)]
pub struct Probes {
    by_node: Mutex<HashMap<u64, Health>>,
}

impl Probes {
    /// The health of `n`: its own checks when it has them, else the last probe result (down
    /// until the first probe answers).
    pub fn health(&self, n: &NodeRt) -> Health {
        if let Some(h) = self.by_node.lock().ok().and_then(|m| m.get(&n.id).cloned()) {
            return h;
        }
        Health {
            up: n.is_up(),
            check_us: n.check_us(),
            last_check_ms: n.last_check_ms(),
            last_error: n.last_error(),
            source: "health-check",
        }
    }

    /// Record a probe result; false when the node is no longer watched.
    fn set(&self, id: u64, h: Health) -> bool {
        match self.by_node.lock() {
            Ok(mut m) => match m.get_mut(&id) {
                Some(slot) => {
                    *slot = h;
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
    }
}

/// Keep one probe task per node of every unchecked pool, following reloads (checked once a
/// second); everything stops with `stop`.
pub fn start(shared: &Arc<Shared>, probes: &Arc<Probes>, stop: &CancellationToken) {
    let (shared, probes, stop) = (Arc::clone(shared), Arc::clone(probes), stop.clone());
    tokio::spawn(async move {
        loop {
            let nodes: Vec<(Arc<NodeRt>, Arc<Handshake>)> = super::pools(&shared)
                .iter()
                .filter(|p| !p.checked)
                .flat_map(|p| {
                    p.shards.iter().flat_map(|s| {
                        s.view()
                            .nodes
                            .iter()
                            .map(|n| (Arc::clone(n), Arc::clone(&p.handshake)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            if let Ok(mut m) = probes.by_node.lock() {
                m.retain(|id, _| nodes.iter().any(|(n, _)| n.id == *id));
                for (n, hs) in nodes {
                    if m.contains_key(&n.id) {
                        continue;
                    }
                    let first = Health {
                        last_error: "not probed yet".into(),
                        source: "admin-probe",
                        ..Health::default()
                    };
                    m.insert(n.id, first);
                    tokio::spawn(run(n, hs, Arc::clone(&probes), stop.clone()));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

async fn run(node: Arc<NodeRt>, hs: Arc<Handshake>, probes: Arc<Probes>, stop: CancellationToken) {
    let mut conn: Option<CtlConn> = None;
    loop {
        let started = Instant::now();
        let result = ping(&node, &hs, &mut conn).await;
        let took = started.elapsed().as_micros() as u64;
        let h = match result {
            Ok(()) => Health {
                up: true,
                check_us: took,
                last_check_ms: now_ms(),
                last_error: String::new(),
                source: "admin-probe",
            },
            Err(e) => {
                conn = None;
                Health {
                    up: false,
                    check_us: took,
                    last_check_ms: now_ms(),
                    last_error: e,
                    source: "admin-probe",
                }
            }
        };
        if !probes.set(node.id, h) {
            return; // the node left the configuration
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The probe's connection authenticates as the pool's own do; then any reply to PING but
/// LOADING or an authentication error means the server can serve.
async fn ping(node: &NodeRt, hs: &Handshake, conn: &mut Option<CtlConn>) -> Result<(), String> {
    if conn.is_none() {
        *conn = Some(
            CtlConn::open(&node.addr, hs, DEADLINE)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let replies = c
        .call(&[&[b"PING"]], DEADLINE)
        .await
        .map_err(|e| format!("PING: {e}"))?;
    match replies.first() {
        Some(Val::Err(e)) => match auth_error(e) {
            Some(refused) => Err(refused.to_string()),
            None if e.starts_with("LOADING") => Err(e.clone()),
            None => Ok(()),
        },
        Some(_) => Ok(()),
        None => Err("PING: no reply".into()),
    }
}
