//! Blocking commands and WAIT: each on a connection of its own to the primary of its shard
//! (every shard's, for WAIT), the session blocked meanwhile as in Redis; a list pop tried
//! first in its non-blocking form on the shared connection ([`crate::session::blocking`]).

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use rampart_commands::Command;
use resp::encode;
use tokio::time::Instant;

use super::{owned_request, Session, CROSS_SHARD};
use crate::session::blocking::{self, BlockFor};
use crate::session::primary::lease_primary;
use crate::upstream::sink::Sink;

impl Session {
    /// A blocking call: on a dedicated connection to the primary of the shard of its keys
    /// (see `session::blocking`).
    pub(super) fn block(&mut self, cmd: &Command, argv: &[&[u8]], raw: Option<&[u8]>) {
        let Some(shard) = self.one_shard(cmd, argv, CROSS_SHARD) else {
            return;
        };
        self.blocked.set_kind(self.client.resp3, false);
        // A list pop goes first in its non-blocking form on the shared connection (see
        // `blocking::at_once`); a fail-open pool's stand-in answers do not fit a pop's. While
        // the shard's writes wait (a failover, a spool to replay), the blocking command waits
        // for the primary as it always does (`lease_primary`), since a held write would give
        // up after `failover_hold`.
        if self.pool.rt.conf.fail_open.is_none()
            && crate::session::primary::ready(&self.pool.rt, shard)
        {
            if let Some((at_once, shape)) = blocking::at_once(cmd.name, argv) {
                return self.pop_or_block(cmd, argv, raw, shard, &at_once, shape);
            }
        }
        let (lease, wait) =
            match lease_primary(&self.pool, shard, self.client.resp3, &mut self.last_node) {
                Ok(l) => l,
                Err(f) => {
                    // A shard that cannot serve it closes the client, as a blocked one whose
                    // server failed is (`Failure::shard_down`); other failures are answered.
                    let seq = self.pending.push_waiting();
                    return blocking::end(Sink::new(&self.pending, seq, 0), f);
                }
            };
        let deadline = block_deadline(&self.pool.rt, blocking::block_for(cmd.name, argv), wait);
        let request = owned_request(argv, raw);
        let seq = self.pending.push_waiting();
        let sink = Sink::new(&self.pending, seq, 0);
        blocking::start(&self.blocked, self.client.entry.as_ref());
        let again = self.again(argv);
        tokio::task::spawn_local(blocking::run(
            lease,
            request,
            sink,
            deadline,
            Rc::clone(&self.blocked),
            again,
        ));
        self.last_shard = shard as u32;
    }

    /// In a cluster pool, what a blocking command needs to follow its slot after `MOVED`
    /// (see `blocking::Again`); `None` in other pools.
    fn again(&self, argv: &[&[u8]]) -> Option<blocking::Again> {
        self.pool.rt.cluster.as_ref()?;
        let key = argv.get(*self.keys.first()?)?;
        Some(blocking::Again {
            pool: Rc::clone(&self.pool),
            key: key.to_vec(),
            resp3: self.client.resp3,
        })
    }

    /// A list pop sent in its non-blocking form on `shard`'s shared connection; the blocking
    /// command follows on a dedicated connection only if it found nothing (see
    /// `blocking::pop_or_block`).
    fn pop_or_block(
        &mut self,
        cmd: &Command,
        argv: &[&[u8]],
        raw: Option<&[u8]>,
        shard: usize,
        at_once: &[u8],
        shape: blocking::Shape,
    ) {
        let seq = self.pending.push_waiting();
        let sink = Sink::new(&self.pending, seq, 0);
        let (pen, inner) = sink.side();
        self.write = true;
        self.send_sink(shard, inner, at_once);
        let request = owned_request(argv, raw);
        let pool = Rc::clone(&self.pool);
        let resp3 = self.client.resp3;
        let timeout = blocking::block_for(cmd.name, argv);
        let again = self.again(argv);
        let block = move || {
            let mut last = 0;
            let (lease, wait) = lease_primary(&pool, shard, resp3, &mut last)?;
            Ok((lease, block_deadline(&pool.rt, timeout, wait), again))
        };
        blocking::hold(&self.blocked);
        tokio::task::spawn_local(blocking::pop_or_block(
            pen,
            shape,
            block,
            request,
            sink,
            Rc::clone(&self.blocked),
            self.client.entry.clone(),
        ));
    }

    /// WAIT: on every shard's primary at once, each on a connection of its own (see
    /// `blocking::wait`); the session is blocked meanwhile, as in Redis.
    pub(super) fn wait(&mut self, argv: &[&[u8]]) {
        let rt = std::sync::Arc::clone(&self.pool.rt);
        let mut leases = Vec::with_capacity(rt.shards.len());
        let mut longest = Duration::ZERO;
        for shard in 0..rt.shards.len() {
            match lease_primary(&self.pool, shard, false, &mut self.last_node) {
                Ok((lease, wait)) => {
                    leases.push(lease);
                    longest = longest.max(wait);
                }
                Err(f) => return self.fail_now(f),
            }
        }
        let ms = std::str::from_utf8(argv[2])
            .ok()
            .and_then(|t| t.parse::<u64>().ok());
        // WAIT's timeout is in milliseconds; otherwise its deadline is a blocking command's.
        let timeout = match ms {
            Some(0) => blocking::BlockFor::Ever,
            Some(ms) => blocking::BlockFor::Up(Duration::from_millis(ms)),
            None => blocking::BlockFor::Unknown,
        };
        let deadline = block_deadline(&rt, timeout, longest);
        let mut request = BytesMut::new();
        encode::command(
            &mut request,
            &[b"PUBLISH", blocking::WAIT_CHANNEL.as_bytes(), b""],
        );
        encode::command(&mut request, argv);
        let seq = self.pending.push_waiting();
        let sink = Sink::new(&self.pending, seq, 0);
        self.blocked.set_kind(self.client.resp3, true);
        blocking::start(&self.blocked, self.client.entry.as_ref());
        tokio::task::spawn_local(blocking::wait(
            leases,
            request.to_vec(),
            sink,
            deadline,
            Rc::clone(&self.blocked),
        ));
    }
}

/// The deadline of a blocking call that blocks for `timeout` in a pool of `rt`, after
/// waiting up to `wait` for its connection: its block timeout plus the pool `timeout` (none
/// for a timeout of 0).
fn block_deadline(
    rt: &crate::topology::PoolRt,
    timeout: BlockFor,
    wait: Duration,
) -> Option<Instant> {
    // A timeout too large for a deadline (`BLPOP q 1e300`) has none: Redis refuses it at
    // once (Redis 7.0: "timeout is negative"), or blocks until data, as with 0.
    let after = |d: Duration| {
        wait.checked_add(d)
            .and_then(|d| d.checked_add(rt.timeout()))
            .and_then(|d| Instant::now().checked_add(d))
    };
    match timeout {
        BlockFor::Ever => None,
        BlockFor::Up(d) => after(d),
        BlockFor::Unknown => after(Duration::ZERO),
    }
}
