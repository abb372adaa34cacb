//! The pool keys of what a client gets when a shard cannot answer: `when_down` (any pool),
//! and those of a cache pool that fails open: `cache`, `fail_open`, `fail_open_timeout`,
//! `fail_open_after`, `fail_open_writes`.

use std::time::Duration;

use crate::error::{ConfigError, Problem};
use crate::pool::{narrow, Fields, Lookup};

/// What a write to a shard that cannot answer gets in a pool that fails open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailOpenWrites {
    /// An error reply (the default).
    #[default]
    Error,
    /// The reply a successful write of that command would give, for the commands whose
    /// reply is fixed (the command table's drop reply); any other write gets the error.
    Drop,
}

/// What a client gets when its request cannot be served because the shard is down or
/// unreachable (no primary, no node for a read, a connection refused, lost or timed out, a
/// held write past `failover_hold`): the pool's `when_down`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhenDown {
    /// The request's error reply (`-ERR rampart: ...`); the client stays connected
    /// (twemproxy's behaviour, the default).
    #[default]
    Error,
    /// No reply: the client's connection is closed in that request's turn, after the
    /// replies before it, as a TCP proxy (HAProxy) in front of a dead server closes it.
    Close,
}

/// How a cache pool fails open when a shard cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailOpen {
    /// A request whose reply has not arrived after this long is answered as a miss (a read)
    /// or per `writes` (a write); the reply, when it comes, is dropped. Default 100 ms.
    pub timeout: Duration,
    /// Failures in a row (timeouts past `timeout`, connection errors) that open the shard's
    /// circuit: then every request of it is answered at once, until a health check gets a
    /// reply. Default 3.
    pub after: u32,
    /// What writes get.
    pub writes: FailOpenWrites,
}

/// `fail_open_timeout`: 100 ms.
pub const FAIL_OPEN_TIMEOUT: Duration = Duration::from_millis(100);
/// `fail_open_after`: 3.
pub const FAIL_OPEN_AFTER: u32 = 3;

impl Fields<'_> {
    /// `when_down`: `error` (default) or `close`; `close` is refused with `fail_open: true`,
    /// whose pools answer such requests themselves (`fail_open` is read first).
    pub(crate) fn when_down(
        &self,
        get: &Lookup<'_, '_>,
        fail_open: bool,
    ) -> Result<WhenDown, ConfigError> {
        match self.text(get, "when_down")? {
            None | Some(("error", _)) => Ok(WhenDown::Error),
            Some(("close", pos)) if fail_open => Err(self.err(pos, Problem::WhenDownFailOpen)),
            Some(("close", _)) => Ok(WhenDown::Close),
            Some((other, pos)) => Err(self.err(pos, Problem::BadWhenDown(other.to_string()))),
        }
    }

    /// `cache` (default: `auto_eject_hosts`) and the fail-open settings (`None` unless
    /// `fail_open: true`).
    pub(crate) fn cache_settings(
        &self,
        get: &Lookup<'_, '_>,
        auto_eject_hosts: bool,
    ) -> Result<(bool, Option<FailOpen>), ConfigError> {
        let cache = self.flag(get, "cache", auto_eject_hosts)?;
        let on = self.flag(get, "fail_open", false)?;
        if !on {
            for key in ["fail_open_timeout", "fail_open_after", "fail_open_writes"] {
                if let Some(e) = get(key) {
                    return Err(self.err(e.pos, Problem::NeedsFailOpen(key)));
                }
            }
            return Ok((cache, None));
        }
        if !cache {
            return Err(self.err(self.pos(get, "fail_open"), Problem::FailOpenNeedsCache));
        }
        let timeout = self.positive(get, "fail_open_timeout", FAIL_OPEN_TIMEOUT)?;
        let after = self
            .number(get, "fail_open_after", 1, 1_000_000)?
            .map_or(FAIL_OPEN_AFTER, narrow);
        let writes = match self.text(get, "fail_open_writes")? {
            None => FailOpenWrites::Error,
            Some(("error", _)) => FailOpenWrites::Error,
            Some(("drop", _)) => FailOpenWrites::Drop,
            Some((other, pos)) => {
                return Err(self.err(pos, Problem::BadFailOpenWrites(other.to_string())))
            }
        };
        Ok((
            cache,
            Some(FailOpen {
                timeout,
                after,
                writes,
            }),
        ))
    }
}
