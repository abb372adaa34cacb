//! Blocking commands (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD with BLOCK, ...): each runs on a
//! dedicated server connection to its shard's primary (`upstream::dedicated`), so it never
//! stalls the connections other clients share.
//!
//! As in Redis, a session runs one blocking command at a time and in order: the command waits
//! for the replies to the session's earlier requests (so it sees the client's own writes), and
//! nothing the client sends after it is run before its reply. The command's deadline is its
//! own block timeout plus the pool `timeout` (none for a timeout of 0). If the client leaves
//! while blocked, its dedicated connection is closed at once, so the server never hands it data
//! that nobody would read.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::notify::LocalNotify;
use crate::session::primary::LeaseSoon;
use crate::upstream::error::Failure;
use crate::upstream::sink::Sink;

/// A session's blocking command in progress, if any, and whether the client is gone.
#[derive(Default)]
pub struct Blocked {
    running: Cell<bool>,
    /// The session's registry entry while blocked, for CLIENT LIST's `b` flag.
    entry: RefCell<Option<Arc<crate::observe::clients::Entry>>>,
    left: Cell<Option<&'static str>>,
    wake: LocalNotify,
}

impl Blocked {
    /// A blocking command of this session is waiting for its reply.
    pub fn is_running(&self) -> bool {
        self.running.get()
    }

    /// The client is gone (or the process stops): a blocked command ends now, with `why` as
    /// its error, and its dedicated connection is closed.
    pub fn leave(&self, why: &'static str) {
        if self.left.get().is_none() {
            self.left.set(Some(why));
            self.wake.notify();
        }
    }

    async fn left(&self) -> &'static str {
        loop {
            if let Some(why) = self.left.get() {
                return why;
            }
            self.wake.notified().await;
        }
    }
}

/// How long a blocking call may block, read from its arguments as Redis reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFor {
    /// A timeout of 0: until data arrives.
    Ever,
    /// At most this long.
    Up(Duration),
    /// The timeout cannot be read; Redis answers such a call with an error at once.
    Unknown,
}

/// The block timeout of a call of the blocking command `name` (lowercase, as in the command
/// table): seconds (a float) for the list and sorted-set commands, milliseconds after `BLOCK`
/// for XREAD and XREADGROUP.
pub fn block_for(name: &str, argv: &[&[u8]]) -> BlockFor {
    let secs = |a: Option<&&[u8]>| {
        let Some(v) = a.and_then(|a| std::str::from_utf8(a).ok()) else {
            return BlockFor::Unknown;
        };
        match v.parse::<f64>() {
            Ok(0.0) => BlockFor::Ever,
            Ok(s) if s > 0.0 && s.is_finite() => {
                BlockFor::Up(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX))
            }
            _ => BlockFor::Unknown,
        }
    };
    match name {
        "blmpop" | "bzmpop" => secs(argv.get(1)),
        "xread" | "xreadgroup" => {
            let mut i = 1;
            while let Some(w) = argv.get(i) {
                if w.eq_ignore_ascii_case(b"streams") {
                    break;
                }
                if w.eq_ignore_ascii_case(b"group") {
                    i += 3;
                    continue;
                }
                if w.eq_ignore_ascii_case(b"block") {
                    let ms = argv
                        .get(i + 1)
                        .and_then(|a| std::str::from_utf8(a).ok())
                        .and_then(|a| a.parse::<i64>().ok());
                    return match ms {
                        Some(0) => BlockFor::Ever,
                        Some(ms) if ms > 0 => BlockFor::Up(Duration::from_millis(ms as u64)),
                        _ => BlockFor::Unknown,
                    };
                }
                i += 1;
            }
            BlockFor::Unknown
        }
        _ => secs(argv.last()),
    }
}

/// Run one blocking request on the connection `lease` gives and answer `sink`; the
/// session's `blocked` state is running until then. The connection goes back for reuse only
/// after a complete reply.
pub async fn run(
    lease: LeaseSoon,
    request: Vec<u8>,
    sink: Sink,
    deadline: Option<Instant>,
    blocked: Rc<Blocked>,
) {
    let result = tokio::select! {
        biased;
        why = blocked.left() => Err(Failure::Ended(why)),
        r = async {
            let mut lease = lease.await?;
            match lease.call(&request, deadline).await {
                Ok(reply) => Ok((lease, reply)),
                Err(e) => Err(Failure::from(e)),
            }
        } => r,
    };
    match result {
        Ok((lease, reply)) => {
            sink.deliver(&reply);
            lease.give_back();
        }
        Err(why) => {
            // The lease was dropped, which closes its connection: a command still blocked
            // in the server goes with it.
            sink.fail(why);
        }
    }
    blocked.running.set(false);
    if let Some(e) = blocked.entry.borrow_mut().take() {
        e.set_flag(crate::observe::clients::FLAG_BLOCKED, false);
    }
}

/// Mark the session's blocking command as started.
pub fn start(blocked: &Blocked, entry: Option<&Arc<crate::observe::clients::Entry>>) {
    blocked.running.set(true);
    if let Some(e) = entry {
        e.set_flag(crate::observe::clients::FLAG_BLOCKED, true);
        *blocked.entry.borrow_mut() = Some(Arc::clone(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<&[u8]> {
        s.split(' ').map(str::as_bytes).collect()
    }

    #[test]
    fn reads_each_commands_timeout() {
        let up = |ms| BlockFor::Up(Duration::from_millis(ms));
        assert_eq!(block_for("blpop", &argv("BLPOP a b 2")), up(2000));
        assert_eq!(block_for("brpop", &argv("BRPOP a 0")), BlockFor::Ever);
        assert_eq!(
            block_for("blmove", &argv("BLMOVE a b LEFT RIGHT 0.5")),
            up(500)
        );
        assert_eq!(block_for("blmpop", &argv("BLMPOP 1.5 1 a LEFT")), up(1500));
        assert_eq!(
            block_for("bzmpop", &argv("BZMPOP 0 1 a MIN")),
            BlockFor::Ever
        );
        assert_eq!(
            block_for("xread", &argv("XREAD COUNT 1 BLOCK 250 STREAMS s $")),
            up(250)
        );
        assert_eq!(
            block_for(
                "xreadgroup",
                &argv("XREADGROUP GROUP block c BLOCK 0 STREAMS s >")
            ),
            BlockFor::Ever
        );
        assert_eq!(block_for("blpop", &argv("BLPOP a -1")), BlockFor::Unknown);
        assert_eq!(block_for("blpop", &argv("BLPOP a x")), BlockFor::Unknown);
    }
}
