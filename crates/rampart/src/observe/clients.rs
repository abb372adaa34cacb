//! Every client session of the process, for `CLIENT LIST`, `CLIENT INFO` and `CLIENT KILL`.
//!
//! A session registers when it starts and leaves when it ends (the [`Registered`] guard), so
//! the registry holds exactly the live sessions: it is bounded by the connections the
//! listeners accept. Registering takes a lock once per connection; on the request path a
//! session only stores into its own entry (plain relaxed stores, no locked instruction, no
//! cache line shared with other sessions): the time of its last request batch and its last
//! command. A kill reaches a session on any worker through its entry: a flag and a wake-up
//! the session waits on; so does a reload ([`reloaded`]), which even an idle session must
//! see (a subscriber or a MONITOR whose user lost its rights).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;

/// Session flag: the client is inside `MULTI` (Redis' `x`).
pub const FLAG_MULTI: u8 = 1;
/// Session flag: the client waits in a blocking command (Redis' `b`).
pub const FLAG_BLOCKED: u8 = 2;
/// Session flag: the client is a `MONITOR` (Redis' `O`).
pub const FLAG_MONITOR: u8 = 4;
/// Session flag: the client speaks RESP3 (`resp=3` in `CLIENT LIST`).
pub const FLAG_RESP3: u8 = 8;
/// Session flag: the client holds Pub/Sub subscriptions (Redis' `P`).
pub const FLAG_PUBSUB: u8 = 16;

/// One live client session as other sessions see it.
#[derive(Debug)]
pub struct Entry {
    /// Session id (`CLIENT ID`), unique in the process.
    pub id: u64,
    /// The client's address: `ip:port`, or the unix socket path and `:0`.
    pub addr: String,
    /// The address the client connected to, in the same form.
    pub laddr: String,
    /// The pool the client connected to.
    pub pool: String,
    /// The client came over loopback or a unix socket.
    pub local: bool,
    /// When the session started.
    created: Instant,
    /// Milliseconds from the registry's epoch to the session's last request batch.
    active_ms: AtomicU64,
    /// Last command: its slot in the command table in the high 16 bits, its subcommand's
    /// position plus one in the low 16 (0: none); `u32::MAX` before the first command.
    cmd: AtomicU32,
    /// `FLAG_*` bits.
    flags: AtomicU8,
    /// Channels, patterns and shard channels the session holds (`sub=`, `psub=`, `ssub=`).
    subs: [AtomicU32; 3],
    /// `CLIENT SETNAME` value (changed rarely; read by `CLIENT LIST`).
    name: Mutex<Option<Vec<u8>>>,
    /// The user the client authenticated as at the proxy (`None`: `default`).
    user: Mutex<Option<String>>,
    /// Set by `CLIENT KILL`; the session closes once it sees it.
    killed: AtomicBool,
    /// Set by [`reloaded`]; the session takes it (and applies the new configuration) at its
    /// next turn.
    reload: AtomicBool,
    /// Wakes the session after `killed` or `reload` is set. One for both: the session polls
    /// it on every turn it waits, and each poll of a waiting `Notify` takes its lock.
    wake: Notify,
    /// While the session is blocked in a command on dedicated server connections: each one's
    /// node (its id) and the server's own id for the connection (`CLIENT ID` there), for
    /// `CLIENT UNBLOCK`.
    blocked_on: Mutex<Vec<(u64, u64)>>,
    /// Where a blocking command stands before it is sent (see [`Entry::unblock_early`]): one
    /// of the `EARLY_*` values.
    early: AtomicU8,
    /// Wakes a blocking command waiting for its connection after `early` was set to
    /// [`EARLY_TIMEOUT`] or [`EARLY_ERROR`].
    early_wake: Notify,
}

/// [`Entry::early`]: no blocking command waits for its connection.
const EARLY_NONE: u8 = 0;
/// [`Entry::early`]: a blocking command waits for its connection (the shard's primary, a
/// spool to empty); nothing was sent.
const EARLY_WAITING: u8 = 1;
/// `Entry::early`: `CLIENT UNBLOCK ... TIMEOUT` ended that wait.
pub const EARLY_TIMEOUT: u8 = 2;
/// `Entry::early`: `CLIENT UNBLOCK ... ERROR` ended that wait.
pub const EARLY_ERROR: u8 = 3;

/// What `CLIENT LIST` shows of one entry, read at one moment.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The entry.
    pub entry: Arc<Entry>,
    /// Seconds since the session started.
    pub age: u64,
    /// Seconds since its last request batch.
    pub idle: u64,
    /// Its last command, `container|sub` for subcommands (`NULL` before the first one).
    pub cmd: String,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Its name, empty when it has none.
    pub name: Vec<u8>,
}

struct Registry {
    epoch: Instant,
    clients: Mutex<BTreeMap<u64, Arc<Entry>>>,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        epoch: Instant::now(),
        clients: Mutex::new(BTreeMap::new()),
    })
}

fn now_ms() -> u64 {
    registry().epoch.elapsed().as_millis() as u64
}

/// Keeps a session in the registry; dropping it removes the session.
#[derive(Debug)]
pub struct Registered(Arc<Entry>);

impl Registered {
    /// The session's entry.
    pub fn entry(&self) -> &Arc<Entry> {
        &self.0
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut m) = registry().clients.lock() {
            m.remove(&self.0.id);
        }
    }
}

/// Add a session (`addr`, `laddr` as [`Entry`] shows them) to the registry.
pub fn register(id: u64, addr: String, laddr: String, pool: String, local: bool) -> Registered {
    let e = Arc::new(Entry {
        id,
        addr,
        laddr,
        pool,
        local,
        created: Instant::now(),
        active_ms: AtomicU64::new(now_ms()),
        cmd: AtomicU32::new(u32::MAX),
        flags: AtomicU8::new(0),
        subs: Default::default(),
        name: Mutex::new(None),
        user: Mutex::new(None),
        killed: AtomicBool::new(false),
        wake: Notify::new(),
        reload: AtomicBool::new(false),
        blocked_on: Mutex::new(Vec::new()),
        early: AtomicU8::new(EARLY_NONE),
        early_wake: Notify::new(),
    });
    if let Ok(mut m) = registry().clients.lock() {
        m.insert(id, Arc::clone(&e));
    }
    Registered(e)
}

impl Entry {
    /// Note a request batch read at `at` (for `idle`; the session's own clock reading, so
    /// this costs no second one).
    #[inline]
    pub fn touch(&self, at: Instant) {
        let ms = at.saturating_duration_since(registry().epoch).as_millis() as u64;
        self.active_ms.store(ms, Ordering::Relaxed);
    }

    /// Note the command being run: `top` its slot in the command table, `sub` its
    /// subcommand's position in that entry's subcommands, if it is one.
    #[inline]
    pub fn set_command(&self, top: usize, sub: Option<usize>) {
        let v = ((top.min(0xffff) as u32) << 16) | sub.map_or(0, |s| (s.min(0xfffe) + 1) as u32);
        self.cmd.store(v, Ordering::Relaxed);
    }

    /// The session's `FLAG_*` bits now.
    pub fn flags(&self) -> u8 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Set or clear one of the `FLAG_*` bits.
    pub fn set_flag(&self, flag: u8, on: bool) {
        if on {
            self.flags.fetch_or(flag, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!flag, Ordering::Relaxed);
        }
    }

    /// Record how many channels, patterns and shard channels the session holds, in that
    /// order (each saturating at `u32::MAX`).
    pub fn set_subscriptions(&self, counts: [usize; 3]) {
        for (cell, n) in self.subs.iter().zip(counts) {
            cell.store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
        }
    }

    /// Channels, patterns and shard channels the session holds (`CLIENT LIST`'s `sub`,
    /// `psub`, `ssub`).
    pub fn subscriptions(&self) -> [u32; 3] {
        self.subs.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// Record the `CLIENT SETNAME` value (`None`: no name).
    pub fn set_name(&self, name: Option<Vec<u8>>) {
        if let Ok(mut n) = self.name.lock() {
            *n = name;
        }
    }

    /// Whether the session is blocked in a command (the `b` flag).
    pub fn is_blocked(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & FLAG_BLOCKED != 0
    }

    /// Note that the session's blocking command waits on the connection the server knows as
    /// `server_id`, on node `node` (see [`Entry::blocked_on`]).
    pub fn add_blocked_on(&self, node: u64, server_id: u64) {
        if let Ok(mut b) = self.blocked_on.lock() {
            b.push((node, server_id));
        }
    }

    /// The session's blocking command ended: it waits on no server connection.
    pub fn clear_blocked_on(&self) {
        if let Ok(mut b) = self.blocked_on.lock() {
            b.clear();
        }
    }

    /// The session's blocking command starts waiting for its connection (nothing sent yet).
    pub fn wait_early(&self) {
        self.early.store(EARLY_WAITING, Ordering::SeqCst);
    }

    /// The session's blocking command got its connection and will be sent, unless `CLIENT
    /// UNBLOCK` came first: then its reason ([`EARLY_TIMEOUT`] or [`EARLY_ERROR`]). Either
    /// way it no longer waits.
    pub fn end_early(&self) -> Option<u8> {
        match self.early.swap(EARLY_NONE, Ordering::SeqCst) {
            r @ (EARLY_TIMEOUT | EARLY_ERROR) => Some(r),
            _ => None,
        }
    }

    /// `CLIENT UNBLOCK` of a blocking command still waiting for its connection: it ends with
    /// `reason` ([`EARLY_TIMEOUT`] or [`EARLY_ERROR`]) and is never sent. `false` when it was
    /// not waiting (sent already, or not blocked).
    pub fn unblock_early(&self, reason: u8) -> bool {
        let done = self
            .early
            .compare_exchange(EARLY_WAITING, reason, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if done {
            self.early_wake.notify_one();
        }
        done
    }

    /// Wait until [`Entry::unblock_early`] ended the session's wait for a connection: its
    /// reason. (A wake-up left over from an earlier command is passed over.)
    pub async fn unblocked_early(&self) -> u8 {
        loop {
            match self.early.load(Ordering::SeqCst) {
                r @ (EARLY_TIMEOUT | EARLY_ERROR) => return r,
                _ => self.early_wake.notified().await,
            }
        }
    }

    /// The server connections the session's blocking command waits on: `(node id, the
    /// server's id for the connection)`; empty when it is not blocked (or not yet sent).
    pub fn blocked_on(&self) -> Vec<(u64, u64)> {
        self.blocked_on
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }

    /// Set the user the client is at the proxy (`CLIENT LIST`'s `user=`, `CLIENT KILL USER`);
    /// called when it changes (AUTH, RESET, a reload).
    pub fn set_user(&self, user: Option<String>) {
        if let Ok(mut u) = self.user.lock() {
            *u = user;
        }
    }

    /// The user the client is at the proxy (`default` when none).
    pub fn user(&self) -> String {
        self.user
            .lock()
            .ok()
            .and_then(|u| u.clone())
            .unwrap_or_else(|| "default".into())
    }

    /// Ask the session to close (it does at its next turn, on whichever worker it runs).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether [`Entry::kill`] was called.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Resolves once [`Entry::kill`] is called or a reload marks the session (at once if
    /// either happened and was not taken yet); the session then looks at
    /// [`Entry::is_killed`] and [`Entry::take_reload`].
    pub async fn noticed(&self) {
        if !self.is_killed() && !self.reload.load(Ordering::Acquire) {
            self.wake.notified().await;
        }
    }

    /// Whether a reload happened since the last call (and forget it).
    pub fn take_reload(&self) -> bool {
        // Read first: the session asks on every turn, and a swap is a locked write each time.
        self.reload.load(Ordering::Relaxed) && self.reload.swap(false, Ordering::AcqRel)
    }

    /// Seconds since the session started.
    pub fn age(&self) -> u64 {
        self.created.elapsed().as_secs()
    }

    /// This entry as `CLIENT LIST` shows it now.
    pub fn seen(self: &Arc<Self>) -> Seen {
        let now = now_ms();
        let cmd = match self.cmd.load(Ordering::Relaxed) {
            u32::MAX => "NULL".to_string(),
            v => {
                let top = rampart_commands::all().get((v >> 16) as usize);
                let sub = (v & 0xffff).checked_sub(1);
                match (top, sub) {
                    (Some(t), Some(s)) => t
                        .subcommands
                        .get(s as usize)
                        .map_or(t.name, |s| s.name)
                        .to_string(),
                    (Some(t), None) => t.name.to_string(),
                    (None, _) => "NULL".to_string(),
                }
            }
        };
        Seen {
            entry: Arc::clone(self),
            age: self.age(),
            idle: now.saturating_sub(self.active_ms.load(Ordering::Relaxed)) / 1000,
            cmd,
            flags: self.flags.load(Ordering::Relaxed),
            name: self
                .name
                .lock()
                .map(|n| n.clone().unwrap_or_default())
                .unwrap_or_default(),
        }
    }
}

/// Every live session, by id.
pub fn all() -> Vec<Arc<Entry>> {
    registry()
        .clients
        .lock()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default()
}

/// A reload published new pools: mark every live session and wake it, so that one
/// waiting for nothing but messages (subscribed, MONITOR, blocked) applies the new
/// configuration at once instead of at its next request. One lock of the registry per
/// reload.
pub fn reloaded() {
    for e in all() {
        e.reload.store(true, Ordering::Release);
        e.wake.notify_one();
    }
}

/// The session with id `id`, if it is live.
pub fn get(id: u64) -> Option<Arc<Entry>> {
    registry()
        .clients
        .lock()
        .ok()
        .and_then(|m| m.get(&id).cloned())
}

/// Redis' `flags=` letters for `FLAG_*` bits (`N` when none is set).
pub fn flag_letters(flags: u8) -> String {
    let mut s = String::new();
    if flags & FLAG_MONITOR != 0 {
        s.push('O');
    }
    if flags & FLAG_PUBSUB != 0 {
        s.push('P');
    }
    if flags & FLAG_MULTI != 0 {
        s.push('x');
    }
    if flags & FLAG_BLOCKED != 0 {
        s.push('b');
    }
    if s.is_empty() {
        s.push('N');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_leave_the_registry_when_their_guard_drops() {
        let g = register(u64::MAX - 7, "a:1".into(), "b:2".into(), "p".into(), true);
        assert!(get(u64::MAX - 7).is_some());
        g.entry().set_flag(FLAG_MULTI, true);
        g.entry().set_flag(FLAG_BLOCKED, true);
        assert_eq!(flag_letters(g.entry().seen().flags), "xb");
        g.entry().set_flag(FLAG_MULTI, false);
        assert_eq!(flag_letters(g.entry().seen().flags), "b");
        drop(g);
        assert!(get(u64::MAX - 7).is_none());
    }

    #[test]
    fn the_last_command_names_its_subcommand() {
        let g = register(u64::MAX - 8, "a:1".into(), "b:2".into(), "p".into(), true);
        assert_eq!(g.entry().seen().cmd, "NULL");
        let all = rampart_commands::all();
        let (top, c) = all
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == "client")
            .expect("client is in the table");
        let sub = c.subcommands.iter().position(|s| s.name == "client|list");
        g.entry().set_command(top, sub);
        assert_eq!(g.entry().seen().cmd, "client|list");
    }
}
