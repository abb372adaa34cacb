//! Recent events for operators: node down/up with the reason, ejections, primary switches,
//! switchovers, reloads, a fail-open shard's circuit opening and closing. A bounded, process-wide log (the newest [`CAPACITY`] entries), read by
//! the admin page and API; every event is also a log line. Each kind is also counted when it is
//! recorded ([`totals`]), so the counts never forget what the bounded log drops.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Events kept.
pub const CAPACITY: usize = 256;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A node passed its rise checks.
    NodeUp,
    /// A node failed its fall checks.
    NodeDown,
    /// Passive failures took a node out.
    NodeEjected,
    /// A node was put into or taken out of maintenance.
    Maintenance,
    /// Sentinel (or a check) moved a shard's primary.
    Failover,
    /// A planned switchover ran.
    Switchover,
    /// The configuration was reloaded (or a reload was refused).
    Reload,
    /// Sentinel named a shard's first primary (at start, or for a new shard): not a failover.
    Primary,
    /// A fail-open shard's circuit opened after `fail_open_after` failures in a row: its
    /// requests are answered without it (misses, dropped writes or errors).
    CircuitOpen,
    /// A fail-open shard's circuit closed: a health check got a reply, requests go to it again.
    CircuitClosed,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 10] = [
        Kind::NodeUp,
        Kind::NodeDown,
        Kind::NodeEjected,
        Kind::Maintenance,
        Kind::Failover,
        Kind::Switchover,
        Kind::Reload,
        Kind::Primary,
        Kind::CircuitOpen,
        Kind::CircuitClosed,
    ];

    /// The snake_case name, as the API spells it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::NodeUp => "node_up",
            Kind::NodeDown => "node_down",
            Kind::NodeEjected => "node_ejected",
            Kind::Maintenance => "maintenance",
            Kind::Failover => "failover",
            Kind::Switchover => "switchover",
            Kind::Reload => "reload",
            Kind::Primary => "primary",
            Kind::CircuitOpen => "circuit_open",
            Kind::CircuitClosed => "circuit_closed",
        }
    }
}

static TOTALS: [AtomicU64; Kind::ALL.len()] = [const { AtomicU64::new(0) }; Kind::ALL.len()];

/// Events recorded since the start, per kind (every kind, zeros included).
pub fn totals() -> Vec<(Kind, u64)> {
    Kind::ALL
        .iter()
        .map(|&k| (k, TOTALS[k as usize].load(Relaxed)))
        .collect()
}

/// One event.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// What happened.
    pub kind: Kind,
    /// Pool, when it concerns one.
    pub pool: String,
    /// Shard, when it concerns one.
    pub shard: String,
    /// Node address, when it concerns one.
    pub node: String,
    /// Human-readable detail (the reason).
    pub message: String,
}

static LOG: Mutex<VecDeque<Event>> = Mutex::new(VecDeque::new());

/// Record an event.
pub fn record(kind: Kind, pool: &str, shard: &str, node: &str, message: impl Into<String>) {
    TOTALS[kind as usize].fetch_add(1, Relaxed);
    let e = Event {
        at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        kind,
        pool: pool.to_string(),
        shard: shard.to_string(),
        node: node.to_string(),
        message: message.into(),
    };
    if let Ok(mut log) = LOG.lock() {
        if log.len() == CAPACITY {
            log.pop_front();
        }
        log.push_back(e);
    }
}

/// The recorded events, oldest first.
pub fn recent() -> Vec<Event> {
    LOG.lock()
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_keeps_the_newest() {
        for i in 0..CAPACITY + 10 {
            record(Kind::NodeUp, "p", "s", "n", format!("event {i}"));
        }
        let all = recent();
        assert!(all.len() <= CAPACITY);
        assert_eq!(
            all.last().map(|e| e.message.clone()),
            Some(format!("event {}", CAPACITY + 9))
        );
        // The count does not forget what the log dropped.
        let up = totals().into_iter().find(|(k, _)| *k == Kind::NodeUp);
        assert!(
            up.is_some_and(|(_, n)| n >= (CAPACITY + 10) as u64),
            "{up:?}"
        );
    }

    #[test]
    fn kind_names_match_the_api_spelling() {
        for k in Kind::ALL {
            assert_eq!(serde_json::to_value(k).ok(), Some(k.name().into()));
        }
    }
}
