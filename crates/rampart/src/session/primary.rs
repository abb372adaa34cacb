//! The shard's primary for a request that needs a connection of its own (WATCH, a blocking
//! command): a dedicated connection to it (see `upstream::dedicated`), leased at once, or,
//! while the shard's writes are held (a failover or switchover under way, see
//! `upstream::hold`), as soon as a primary may take writes again, within the pool's
//! `failover_hold`, as a held write would be sent. While the shard's spool still holds
//! writes to replay, the lease waits for it to empty too (a write on a connection of its
//! own must not overtake spooled ones, as a shared-connection write cannot).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::topology::node::NodeRt;
use crate::topology::PoolRt;
use crate::upstream::dedicated::Lease;
use crate::upstream::error::Failure;
use crate::upstream::pool::WorkerPool;
use crate::upstream::route;

/// The shard's writable primary for a command that needs a connection of its own (WATCH, a
/// blocking command), or why there is none (nothing was sent).
fn writable_primary(rt: &PoolRt, shard: usize) -> Result<Arc<NodeRt>, Failure> {
    let view = rt.shards[shard].view();
    rt.shards[shard]
        .write_target(&view)
        .cloned()
        .ok_or_else(|| Failure::NoPrimary {
            shard: rt.shards[shard].name.clone(),
            cause: route::primary_down(rt, shard),
        })
}

/// Whether `shard` has a primary taking writes now, with no spooled write still to replay:
/// a write sent now goes out at once, neither held nor queued behind the spool.
pub fn ready(rt: &PoolRt, shard: usize) -> bool {
    route::spool_clear(rt, shard) && writable_primary(rt, shard).is_ok()
}

/// Why a write for `shard` would fail now with nothing sent: the shard has no writable
/// primary and waiting cannot bring one (see [`route::hold_may_help`]), or, in a fail-open
/// pool whose writes get errors (`fail_open_writes: error`), its circuit is open. `None`
/// when the write would go out, or wait in the failover hold, or be dropped as the pool
/// says (`fail_open_writes: drop`). A write split over shards asks this of each before
/// sending any part, so no shard applies its part of a write that fails.
pub fn refused_now(rt: &PoolRt, shard: usize) -> Option<Failure> {
    if let Some(fo) = rt.conf.fail_open {
        if fo.writes == rampart_config::FailOpenWrites::Drop {
            return None;
        }
        if rt.shards[shard].circuit.is_open() {
            return Some(Failure::CacheShardDown {
                shard: rt.shards[shard].name.clone(),
                why: crate::upstream::failopen::CIRCUIT_OPEN,
            });
        }
    }
    if !rt.checked {
        return None;
    }
    match writable_primary(rt, shard) {
        Err(f) if !route::hold_may_help(rt, shard) => Some(f),
        _ => None,
    }
}

/// A dedicated connection to the shard's writable primary that the holding session's task
/// awaits: ready at once, or coming once the shard has a primary that may take writes again.
pub type LeaseSoon = Pin<Box<dyn Future<Output = Result<Lease, Failure>>>>;

/// How often a request waiting for a writable primary looks again (as the hold's releaser).
const PRIMARY_POLL: Duration = Duration::from_millis(2);

/// A dedicated connection to `shard`'s writable primary for WATCH or a blocking command.
/// When the shard has none but its writes are held (a failover or switchover under way, see
/// `upstream::hold`), the connection is leased as soon as a primary may take writes, waiting
/// at most the pool's `failover_hold` (then [`Failure::HoldExpired`]), as a held write
/// would. While the shard's spool holds writes still to replay, it waits for the spool to
/// empty, at most `failover_hold` or the pool `timeout`, whichever is longer (then
/// [`Failure::SpoolBusy`]). The returned `Duration` is that longest wait, for the caller's
/// deadline. Otherwise the failure at once. `last_node` is set to the node leased now.
/// A reload while it waits: it goes on with the pool the worker serves now (the shard of the
/// same name; [`Failure::Reloaded`] when there is none), so the primary is the one that
/// pool's view names and the connection opens with its settings (`redis_db`, AUTH, TLS).
/// In a fail-open pool, a shard whose circuit is open gives [`Failure::CacheShardDown`] at
/// once.
pub fn lease_primary(
    pool: &WorkerPool,
    shard: usize,
    resp3: bool,
    last_node: &mut u64,
) -> Result<(LeaseSoon, Duration), Failure> {
    let rt = &pool.rt;
    // A fail-open pool's shard whose circuit is open gets no traffic: answered at once, as
    // every other request of that shard is (`upstream::failopen`).
    if rt.conf.fail_open.is_some() && rt.shards[shard].circuit.is_open() {
        return Err(Failure::CacheShardDown {
            shard: rt.shards[shard].name.clone(),
            why: crate::upstream::failopen::CIRCUIT_OPEN,
        });
    }
    let spooling = !route::spool_clear(rt, shard);
    match writable_primary(rt, shard) {
        Ok(node) if !spooling => {
            let lease = pool.dedicated.lease_for(rt, &node, resp3)?;
            *last_node = node.id;
            Ok((Box::pin(std::future::ready(Ok(lease))), Duration::ZERO))
        }
        Err(f) if !route::hold_may_help(rt, shard) => Err(f),
        _ => {
            let (rt, dedicated) = (Arc::clone(rt), Rc::clone(&pool.dedicated));
            let hold = rt.conf.failover_hold;
            let longest = if spooling {
                hold.max(rt.timeout())
            } else {
                hold
            };
            let until = Instant::now() + longest;
            let soon = async move {
                loop {
                    // A reload while waiting: follow the pool the worker serves now (found by
                    // its shard's name), whose view moves on and whose settings the
                    // connection must be opened with.
                    let (rt, shard) = match dedicated.current() {
                        Some(now) if !Arc::ptr_eq(&now, &rt) => {
                            let name = &rt.shards[shard].name;
                            match now.shards.iter().position(|s| &s.name == name) {
                                Some(at) => (now, at),
                                None => {
                                    return Err(Failure::Reloaded {
                                        cause: Box::new(Failure::NoPrimary {
                                            shard: name.clone(),
                                            cause: None,
                                        }),
                                    })
                                }
                            }
                        }
                        _ => (Arc::clone(&rt), shard),
                    };
                    let spooling = !route::spool_clear(&rt, shard);
                    match writable_primary(&rt, shard) {
                        Ok(node) if !spooling => return Ok(dedicated.lease_for(&rt, &node, resp3)?),
                        Err(f) if !route::hold_may_help(&rt, shard) => return Err(f),
                        _ if Instant::now() < until => tokio::time::sleep(PRIMARY_POLL).await,
                        Ok(_) => {
                            return Err(Failure::SpoolBusy {
                                shard: rt.shards[shard].name.clone(),
                                waited: longest,
                            })
                        }
                        Err(_) => {
                            return Err(Failure::HoldExpired {
                                shard: rt.shards[shard].name.clone(),
                                hold,
                                cause: route::primary_down(&rt, shard),
                            })
                        }
                    }
                }
            };
            Ok((Box::pin(soon), longest))
        }
    }
}
