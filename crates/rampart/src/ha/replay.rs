//! Replaying a shard's spool once its primary takes writes again.
//!
//! One task per spooled shard (restarted with each pool generation). While the spool holds
//! entries and the shard has a writable primary, it sends them in order on a connection of
//! its own, one entry at a time: the entry's bytes (a command, or a whole MULTI ... EXEC),
//! then its replies, then the checkpoint (`SpoolLog::ack`), so a crash replays at most the
//! one entry in flight. Meanwhile the shard's newer writes wait in the failover hold (the
//! router sends none while the spool is not empty). An entry the server refuses for a reason
//! that passes (`READONLY`, `LOADING`, `MASTERDOWN`, `BUSY`, `TRYAGAIN`, `NOREPLICAS`,
//! `OOM`, `MISCONF`) or whose connection fails stays and is sent again later (each try
//! waiting twice as long as the last, up to a second, and logged at most every ten seconds:
//! `Trouble`). So does one refused because the primary does not accept rampart's own
//! credentials (`NOAUTH`, `WRONGPASS`: a password set or changed on the server), which a
//! reload with the right `redis_auth` / `redis_username` fixes: the acknowledged writes wait
//! for it. One it answers with any other error (a `WRONGTYPE`, an `XADD` id not above the
//! stream's last, `NOPERM`: rampart's backend user may not run that command or touch that
//! key) is logged as an error, counted, and leaves the spool: that entry can never succeed
//! as it is, and keeping it would stop every later write of the shard. With `min_replica_acks`, an entry leaves only once that many replicas
//! have it (`WAIT`). A progress line is logged every second while replaying.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::durability::reply::reply_count;
use crate::ha::link::{Link, Val};
use crate::topology::PoolRt;

/// How often an idle replayer looks at its spool and shard.
const TICK: Duration = Duration::from_millis(20);
/// Entries read from disk at once.
const BATCH: usize = 256;
/// Error replies after which an entry stays for a later try: the server did not run it and
/// may take it later (a replica, loading, a long script; a primary short of the replicas
/// its `min-replicas-to-write` asks for, at `maxmemory` with nothing to evict, or refusing
/// writes after a failed RDB save). An acknowledged write is dropped only when the server
/// refuses the entry itself.
const TRANSIENT: [&str; 8] = [
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "BUSY",
    "TRYAGAIN",
    "NOREPLICAS",
    "OOM",
    "MISCONF",
];
/// Error replies that say the primary refused rampart's own credentials: the entry stays
/// and replay waits (with the back-off of [`Trouble`]) for a reload with the right ones.
const CREDENTIALS: [&str; 2] = ["NOAUTH", "WRONGPASS"];
/// The longest wait between two tries while replay cannot go on.
const PAUSE_MAX: Duration = Duration::from_secs(1);
/// While replay cannot go on, a log line at most this often (the first one at once).
const TROUBLE_LINE: Duration = Duration::from_secs(10);

/// Replay that cannot go on for now (the primary cannot be reached, or refuses an entry for
/// now, or the connection failed): each try waits twice as long as the last, up to
/// [`PAUSE_MAX`], and the reason is logged when it starts and then at most once per
/// [`TROUBLE_LINE`] with the tries left out, so a primary that passes its checks but
/// refuses the replay (`maxclients` reached, `NOREPLICAS`, a long script) costs neither a
/// connection nor a log line every tick.
struct Trouble {
    pause: Duration,
    tries: u64,
    logged: Option<Instant>,
    /// The primary the tries went to: another one starts afresh (a failover ended it).
    node: u64,
}

impl Trouble {
    fn new() -> Trouble {
        Trouble {
            pause: TICK,
            tries: 0,
            logged: None,
            node: 0,
        }
    }

    /// The shard's primary is `node` now: trouble with another one is over.
    fn primary(&mut self, node: u64) {
        if self.tries > 0 && self.node != node {
            *self = Trouble::new();
        }
        self.node = node;
    }

    /// A try failed for `why`: logged when due; the next try waits longer.
    fn failed(&mut self, name: &str, why: std::fmt::Arguments<'_>) {
        self.tries += 1;
        let due = self.logged.is_none_or(|t| t.elapsed() >= TROUBLE_LINE);
        if due {
            if self.tries == 1 {
                tracing::warn!("spool {name}: {why}");
            } else {
                tracing::warn!("spool {name}: {why} ({} tries so far)", self.tries);
            }
            self.logged = Some(Instant::now());
        }
        self.pause = (self.pause * 2).min(PAUSE_MAX);
    }

    /// A try went through: the next one comes at the usual tick.
    fn over(&mut self, name: &str) {
        if self.tries > 0 {
            tracing::info!(
                "spool {name}: replay goes on after {} failed tries",
                self.tries
            );
        }
        *self = Trouble::new();
    }
}

/// Replay the spool of `pool`'s shard `shard` until `stop`.
pub async fn run(pool: Arc<PoolRt>, shard: usize, stop: CancellationToken) {
    let Some(spool) = pool.shards[shard].spool.clone() else {
        return;
    };
    let name = format!("{}/{}", pool.conf.name, pool.shards[shard].name);
    let mut link: Option<(u64, Link)> = None;
    let mut started: Option<(Instant, u64)> = None;
    let mut last_line = Instant::now();
    let mut trouble = Trouble::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(trouble.pause) => {}
        }
        // CLIENT PAUSE of the pool: no spooled write goes out either (an operator pausing
        // writes for a failover must see the primary's offset stand still).
        if crate::topology::paused::writes_paused(pool.index) {
            continue;
        }
        if spool.waiting() == 0 || spool.stopped().is_some() {
            if let Some((t0, _)) = started.take() {
                tracing::info!(
                    "spool {name}: replay done in {:.1}s ({} entries replayed since start)",
                    t0.elapsed().as_secs_f64(),
                    spool.stats.replayed.load(Relaxed)
                );
            }
            link = None;
            continue;
        }
        let sh = &pool.shards[shard];
        let view = sh.view();
        let Some(primary) = sh.write_target(&view).cloned() else {
            link = None;
            continue;
        };
        trouble.primary(primary.id);
        if link.as_ref().map(|(id, _)| *id) != Some(primary.id) {
            match Link::open(&primary.addr, &pool.handshake, pool.timeout()).await {
                Ok(l) => link = Some((primary.id, l)),
                Err(e) => {
                    trouble.failed(
                        &name,
                        format_args!("cannot reach {} to replay: {e}", primary.label),
                    );
                    continue;
                }
            }
        }
        let entries = match spool.read(0, BATCH).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("spool {name}: {e}");
                continue;
            }
        };
        if entries.is_empty() {
            // Appends asked for but not on disk yet.
            continue;
        }
        let t0 = *started.get_or_insert_with(|| {
            tracing::info!(
                "spool {name}: replaying {} entries to {}",
                spool.waiting(),
                primary.label
            );
            (Instant::now(), spool.stats.replayed.load(Relaxed))
        });
        for e in entries {
            if stop.is_cancelled() {
                return;
            }
            if crate::topology::paused::writes_paused(pool.index) {
                break;
            }
            let Some((_, l)) = link.as_mut() else {
                break;
            };
            let n = reply_count(&e.payload).unwrap_or(1);
            let replies = match l.call_raw(&e.payload, n, pool.timeout()).await {
                Ok(r) => r,
                Err(err) => {
                    trouble.failed(&name, format_args!("entry {} not confirmed: {err}", e.seq));
                    link = None;
                    break;
                }
            };
            let errors: Vec<&str> = replies
                .iter()
                .flat_map(|r| std::iter::once(r).chain(r.items()))
                .filter_map(|r| match r {
                    Val::Err(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            if errors
                .iter()
                .any(|t| TRANSIENT.iter().any(|w| t.starts_with(w)))
            {
                trouble.failed(
                    &name,
                    format_args!(
                        "entry {} refused for now ({}); trying again later",
                        e.seq,
                        errors.join("; ")
                    ),
                );
                link = None;
                break;
            }
            if errors
                .iter()
                .any(|t| CREDENTIALS.iter().any(|w| t.starts_with(w)))
            {
                trouble.failed(
                    &name,
                    format_args!(
                        "entry {} refused: {} does not accept rampart's credentials ({}); the spool keeps it and replay waits for a reload with the right redis_auth / redis_username",
                        e.seq,
                        primary.label,
                        errors.join("; ")
                    ),
                );
                link = None;
                break;
            }
            if !errors.is_empty() {
                spool.stats.replay_errors.fetch_add(1, Relaxed);
                let why = if errors.iter().any(|t| t.starts_with("NOPERM")) {
                    " (rampart's backend user may not run it on this server)"
                } else {
                    ""
                };
                tracing::error!(
                    "spool {name}: entry {} answered {}{why}; it leaves the spool: an acknowledged write is lost",
                    e.seq,
                    errors.join("; ")
                );
            }
            if !replicated(l, &pool, &name, &stop).await {
                link = None;
                break;
            }
            if let Err(err) = spool.ack(e.seq).await {
                tracing::error!("spool {name}: {err}");
                break;
            }
            trouble.over(&name);
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            tracing::info!(
                "spool {name}: replaying, {} entries left, {} replayed in {:.1}s",
                spool.waiting(),
                spool.stats.replayed.load(Relaxed) - t0.1,
                t0.0.elapsed().as_secs_f64()
            );
        }
    }
}

/// With `min_replica_acks`, wait until that many replicas have the entry just replayed
/// (`WAIT`, again while fewer answer) before it leaves the spool; false when the connection
/// failed (the entry stays) or the task stops.
async fn replicated(l: &mut Link, pool: &PoolRt, name: &str, stop: &CancellationToken) -> bool {
    let wanted = pool.conf.min_replica_acks;
    if wanted == 0 {
        return true;
    }
    let within = pool.conf.min_replica_acks_timeout;
    let n = wanted.to_string();
    let ms = within.as_millis().max(1).to_string();
    let wait: &[&[u8]] = &[b"WAIT", n.as_bytes(), ms.as_bytes()];
    loop {
        if stop.is_cancelled() {
            return false;
        }
        match l.call(&[wait], pool.timeout() + within).await {
            Ok(r) if matches!(r.first(), Some(Val::Int(x)) if *x >= i64::from(wanted)) => {
                return true
            }
            Ok(r) => tracing::warn!(
                "spool {name}: replayed entry not yet on {wanted} replicas ({}); waiting",
                r.first().map_or_else(String::new, Val::describe)
            ),
            Err(err) => {
                tracing::warn!("spool {name}: WAIT failed: {err}");
                return false;
            }
        }
    }
}
