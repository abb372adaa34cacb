//! Recent events for operators: node down/up with the reason, ejections, primary switches,
//! switchovers, reloads. A bounded, process-wide log (the newest [`CAPACITY`] entries), read by
//! the admin page and API; every event is also a log line.

use std::collections::VecDeque;
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
    /// Node, when it concerns one.
    pub node: String,
    /// Human-readable detail (the reason).
    pub message: String,
}

static LOG: Mutex<VecDeque<Event>> = Mutex::new(VecDeque::new());

/// Record an event.
pub fn record(kind: Kind, pool: &str, shard: &str, node: &str, message: impl Into<String>) {
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
    }
}
