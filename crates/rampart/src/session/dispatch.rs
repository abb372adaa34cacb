//! What to do with one request: answer it here, forward it to the shard that holds its keys,
//! split it over shards, or send it to every shard.
//!
//! The command table (`rampart-commands`) says which of these a command is and where its keys
//! are; this module applies the pool's ring to the keys and queues the bytes. A request that
//! names keys on different shards (and is not one the proxy can split) is refused with an
//! error that says so and how to fix it; the connection stays open.

use std::rc::Rc;

use bytes::BytesMut;
use rampart_commands::{Command, Flags, Merge, Route};
use resp::encode;
use tokio::time::Instant;

use crate::observe::stats::PoolStat;
use crate::reply::pending::Pending;
use crate::session::blocking::Blocked;
use crate::session::local::{self, Answer, ClientState, Local};
use crate::session::pubsub::{self, Subscriptions};
use crate::session::transaction::{self, Transaction};
use crate::session::watch::Watch;
use crate::text::sanitize;
use crate::topology::policy::Named;
use crate::topology::Mode;
use crate::upstream::pool::WorkerPool;
use crate::upstream::route::{self, Access};
use crate::upstream::sink::Sink;
use crate::upstream::worker::Worker;

mod block;
mod fanout;
mod multi;

/// Reply to a request whose keys live on more than one shard.
pub const CROSS_SHARD: &str = "ERR keys of this command live on different shards; give them a common hash tag (e.g. {user1}:a and {user1}:b) to put them on one shard";

/// Redis Cluster's reply to a command whose keys are in more than one slot (in a cluster
/// pool, where a command that needs one node needs one slot).
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
/// A cluster pool's error for a key whose slot no node of the map serves (Redis Cluster's
/// reply for an unassigned slot).
pub const CLUSTERDOWN_UNSERVED: &str = "CLUSTERDOWN Hash slot not served";

/// Redis' reply to a command sent before AUTH.
const NOAUTH: &str = "NOAUTH Authentication required.";

/// What the session remembers of a request until its reply is ready: for the per-command
/// latency histogram and the SLOWLOG.
pub struct Timed {
    /// Command-table slot (see `stats::command_index`).
    pub cmd: u16,
    /// When the read that brought it happened.
    pub start: Instant,
    /// The node it went to (0: answered here; `u64::MAX`: several).
    pub node: u64,
    /// Bytes of its arguments at the front of [`Session::slow_args`] (0 when the slow log is off).
    pub args_len: u32,
    /// The shard of `node` (when `node` is one node), as an index into the pool's shards.
    pub shard: u32,
}

/// One client session: its state and what the dispatcher needs to route its requests.
pub struct Session {
    /// The worker.
    pub worker: Rc<Worker>,
    /// The pool the client connected to.
    pub pool: Rc<WorkerPool>,
    /// The session's reply queue.
    pub pending: Rc<Pending>,
    /// What the client is and said about itself (id, name, AUTH, closing).
    pub client: ClientState,
    /// The session ends because of an error (counted as `client_err`).
    pub errored: bool,
    /// The session's blocking command in progress (see `session::blocking`).
    pub blocked: Rc<Blocked>,
    /// What the listener the client came through serves.
    pub mode: Mode,
    /// The configuration generation of `pool`.
    generation: u64,
    /// The node the current request went to (see [`Timed::node`]).
    last_node: u64,
    /// Its shard.
    last_shard: u32,
    /// Each request whose reply has not been counted yet, in order (replies leave in order,
    /// so the oldest entries are the ones answered).
    pub timing: std::collections::VecDeque<Timed>,
    /// The arguments of the requests in `timing`, in the same order, cut for the slow log
    /// (see [`crate::observe::slowlog::keep`]); bounded by the requests in flight.
    pub slow_args: std::collections::VecDeque<u8>,
    now: Instant,
    deadline: Instant,
    keys: Vec<usize>,
    shards: Vec<usize>,
    /// The current request may change data (goes to the primary).
    write: bool,
    /// Read-your-writes: until when this client's reads of a shard go to its primary.
    ryw: Vec<(usize, Instant)>,
    tmp: BytesMut,
    /// The transaction being queued, between `MULTI` and `EXEC`.
    txn: Option<Transaction>,
    /// The session's watch, from `WATCH` until `EXEC`, `DISCARD`, `UNWATCH` or `RESET`.
    watch: Option<Rc<Watch>>,
    /// The session's Pub/Sub subscriptions (see `session::pubsub`).
    pub subs: Subscriptions,
    /// Keys of the current request and their access, for the ACL check (reused).
    acl_keys: Vec<(usize, rampart_commands::KeyFlags)>,
}

impl Session {
    /// State for a new session.
    pub fn new(worker: Rc<Worker>, pool: Rc<WorkerPool>, pending: Rc<Pending>, id: u64) -> Self {
        let (authed, user) = crate::session::acl::initial(&pool.rt.conf);
        let generation = worker.generation();
        Session {
            client: ClientState {
                id,
                authed,
                name: None,
                closing: false,
                local: false,
                addr: String::new(),
                resp3: false,
                entry: None,
                reply_off: false,
                skip_next: false,
                monitoring: false,
                monitor: None,
                held: None,
                user,
                auth_held: None,
                auth_waited: false,
            },
            worker,
            pool,
            pending,
            errored: false,
            blocked: Rc::default(),
            mode: Mode::All,
            generation,
            last_node: 0,
            last_shard: 0,
            timing: std::collections::VecDeque::new(),
            slow_args: std::collections::VecDeque::new(),
            now: Instant::now(),
            deadline: Instant::now(),
            keys: Vec::new(),
            shards: Vec::new(),
            write: true,
            ryw: Vec::new(),
            tmp: BytesMut::new(),
            txn: None,
            watch: None,
            subs: Subscriptions::default(),
            acl_keys: Vec::new(),
        }
    }

    /// The client is inside `MULTI` (its commands are being queued).
    pub fn in_multi(&self) -> bool {
        self.txn.is_some()
    }

    /// Decoder limits from the pool's config.
    pub fn decoder_limits(&self) -> resp::Limits {
        resp::Limits {
            max_bulk: usize::try_from(self.pool.rt.conf.limits.max_bulk_len).unwrap_or(usize::MAX),
            ..resp::Limits::default()
        }
    }

    /// Whether another request may be accepted now (in-flight bound; nothing runs after a
    /// blocking command until it is answered, as in Redis).
    pub fn can_dispatch(&self) -> bool {
        !self.pending.hanging_up()
            && self.pending.outstanding()
                < self.pool.rt.conf.limits.max_inflight_per_client as usize
            && !self.blocked.is_running()
            && !self.watch.as_ref().is_some_and(|w| w.is_busy())
    }

    /// Start of a batch of requests read together: they share one deadline.
    pub fn begin_batch(&mut self) {
        self.follow_reload();
        self.now = Instant::now();
        self.deadline = self.now + self.pool.rt.timeout();
        if let Some(e) = &self.client.entry {
            e.touch(self.now.into_std());
        }
    }

    /// Adopt the pools of a reload the session has not seen yet (the worker's view first),
    /// and the client's user with its new rules (see `follow_users`).
    pub fn follow_reload(&mut self) {
        if self.worker.is_stale() {
            self.worker.refresh();
        }
        if self.generation != self.worker.generation() {
            self.generation = self.worker.generation();
            match self.worker.pool(&self.pool.rt.conf.name) {
                Some(p) => {
                    self.pool = p;
                    self.pending.set_close_when_down(
                        (self.pool.rt.conf.when_down == rampart_config::WhenDown::Close)
                            .then_some(self.pool.rt.index),
                    );
                    self.follow_users();
                }
                // The pool left the configuration: finish what is in flight, then close.
                None => self.close_now("its pool was removed from the configuration"),
            }
        }
    }

    /// Close the session once its replies are out, hearing no more messages and ending a
    /// blocked command with `why` as its error.
    fn close_now(&mut self, why: &'static str) {
        self.client.closing = true;
        self.leave_pubsub();
        self.blocked.leave(why);
    }

    /// After a reload: the client's user takes its new rules; a client whose user was
    /// removed, or that is nobody in a pool that now has users, is closed (as Redis closes
    /// the clients of a deleted user), and so is a subscriber whose user may no longer use
    /// one of its channels or patterns (as Redis 7.0 closes it).
    fn follow_users(&mut self) {
        let users = &self.pool.rt.conf.users;
        if users.is_empty() {
            // A pool that no longer has users removed every user. Left logged in with no user,
            // a client would run every command on every key, without the `redis_auth` a new
            // client may now need: it is closed, as the client of any removed user is.
            if let Some(u) = self.client.user.take() {
                if self.client.authed {
                    tracing::info!(
                        client = self.client.id,
                        user = %u.name,
                        "closing client: its pool no longer has users"
                    );
                    self.close_now("its user was removed from the configuration");
                }
            }
            return;
        }
        let name = self
            .client
            .user
            .as_ref()
            .map_or("default", |u| u.name.as_str());
        match users.iter().find(|u| u.name == name) {
            Some(u) if self.client.authed => {
                let u = std::sync::Arc::clone(u);
                if !self.subs.allowed_by(&u.rules) {
                    tracing::info!(
                        client = self.client.id,
                        user = %u.name,
                        "closing client: its user may no longer use one of its channels or patterns"
                    );
                    self.close_now("its user may no longer use one of its channels");
                }
                if let Some(e) = &self.client.entry {
                    e.set_user(Some(u.name.clone()));
                }
                self.client.user = Some(u);
            }
            Some(_) => {}
            None if !self.client.authed => {}
            None => {
                tracing::info!(
                    client = self.client.id,
                    user = name,
                    "closing client: its user is no longer in the configuration"
                );
                self.close_now("its user was removed from the configuration");
            }
        }
    }

    /// Queue an error reply (`msg` without the leading `-`).
    pub fn reply_error(&self, msg: &str) {
        let mut b = BytesMut::with_capacity(msg.len() + 3);
        encode::error(&mut b, msg);
        self.pending.push_ready(&b);
    }

    /// Queue a reply already encoded.
    pub fn reply_raw(&self, bytes: &[u8]) {
        self.pending.push_ready(bytes);
    }

    /// Answer a request that failed before it was sent with `f`, as a server connection's
    /// failure is answered ([`Sink::fail`]: the error reply, or the client closed when the
    /// shard is down in a pool with `when_down: close`).
    pub fn fail_now(&self, f: crate::upstream::error::Failure) {
        let seq = self.pending.push_waiting();
        Sink::new(&self.pending, seq, 0).fail(f);
    }

    /// Run a local answer on the narrow view of the session it may use, then carry it out.
    fn local(&mut self, f: impl FnOnce(&mut Local<'_>) -> Answer) {
        match self.local_answer(f) {
            Answer::Reply(out) => self.reply_raw(&out),
            Answer::Broadcast(merger, argv) => {
                let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
                self.broadcast(merger, &argv, None)
            }
            Answer::Later => {}
        }
    }

    /// A local answer, with what it changed in the session followed up (the protocol, the
    /// name and user in the client registry), not yet given to the client.
    fn local_answer(&mut self, f: impl FnOnce(&mut Local<'_>) -> Answer) -> Answer {
        let name_was = self.client.name.as_ref().map(|n| (n.as_ptr(), n.len()));
        let user_was = self.client.user.as_ref().map(std::sync::Arc::as_ptr);
        let mut l = Local {
            client: &mut self.client,
            pool: &self.pool.rt,
            routes: &self.pool,
            shared: &self.worker.shared,
            pending: &self.pending,
        };
        let answer = f(&mut l);
        // HELLO and RESET change the protocol messages are framed in.
        self.pubsub_protocol();
        // A new name is a new allocation: the registry copies it only then.
        if self.client.name.as_ref().map(|n| (n.as_ptr(), n.len())) != name_was {
            if let Some(e) = &self.client.entry {
                e.set_name(self.client.name.clone());
            }
        }
        // AUTH, HELLO and RESET change the user.
        if self.client.user.as_ref().map(std::sync::Arc::as_ptr) != user_was {
            if let Some(e) = &self.client.entry {
                e.set_user(self.client.user.as_ref().map(|u| u.name.clone()));
            }
        }
        answer
    }

    /// Handle one request. `raw` is its RESP encoding when it arrived as RESP (it is forwarded
    /// as is); inline requests are re-encoded. Returns false, doing nothing, for a blocking
    /// command that must wait for the replies to the session's earlier requests (the caller
    /// keeps it and offers it again once they are out).
    pub fn handle(&mut self, argv: &[&[u8]], raw: Option<&[u8]>) -> bool {
        match self.pool.rt.policy.lookup(argv[0]) {
            Named::Table(found) => self.handle_found(found, argv, raw),
            // A renamed command travels under its real name.
            Named::Renamed(cmd) => {
                let mut real: Vec<&[u8]> = argv.to_vec();
                real[0] = cmd.name.as_bytes();
                self.handle_found(Some(cmd), &real, None)
            }
        }
    }

    fn handle_found(
        &mut self,
        found: Option<&'static Command>,
        argv: &[&[u8]],
        raw: Option<&[u8]>,
    ) -> bool {
        // A subscribe command whose servers have not answered yet may still be refused,
        // subscribing nothing: a RESP2 session's next command (answered in subscribed mode
        // or not) and any session's next (un)subscribe (whose counts include it) wait for
        // the answer, as Redis has run the subscribe before it reads the next command.
        if self.subs.listener().is_some_and(|l| l.unsettled())
            && (!self.client.resp3 || found.is_some_and(|c| c.route == Route::PubSub))
        {
            return false;
        }
        if let Some(c) = found {
            if c.flags.contains(Flags::BLOCKING) && self.pending.outstanding() > 0 && c.blocks(argv)
            {
                return false;
            }
            // WATCH, EXEC of a watching session and WAIT follow the client's earlier requests
            // (which travel on other connections): they wait for their replies (WAIT must
            // count replicas that have the writes before it).
            if self.pending.outstanding() > 0
                && (((c.name == "watch" || c.name == "wait") && self.txn.is_none())
                    || (c.name == "exec" && self.txn.is_some() && self.watch.is_some()))
            {
                return false;
            }
        }
        self.worker.stats.commands.add(1);
        let args_len = if crate::observe::slowlog::is_enabled() {
            crate::observe::slowlog::keep(argv, &mut self.slow_args)
        } else {
            0
        };
        let t_cmd = crate::observe::stats::command_index(found);
        let t = Timed {
            cmd: t_cmd as u16,
            start: self.now,
            node: 0,
            shard: 0,
            args_len,
        };
        self.timing.push_back(t);
        self.last_node = 0;
        if let (Some(e), Some(c)) = (&self.client.entry, found) {
            e.set_command(t_cmd, sub_position(c, argv));
        }
        // CLIENT REPLY OFF / SKIP: the reply is dropped in its turn. RESET turns replies
        // back on before it answers, so OFF does not drop its `+RESET` (SKIP does, as in
        // Redis: the skip is taken when the command starts).
        let mute = (self.client.reply_off && found.is_none_or(|c| c.name != "reset"))
            || std::mem::take(&mut self.client.skip_next);
        if mute {
            self.pending.mute_next();
        }
        let in_multi = self.txn.is_some();
        self.route(found, argv, raw);
        if mute {
            self.pending.unmute();
        }
        // CLIENT LIST's `x` flag follows the session in and out of MULTI (one atomic
        // operation when that changes, none otherwise).
        if in_multi != self.txn.is_some() {
            if let Some(e) = &self.client.entry {
                e.set_flag(crate::observe::clients::FLAG_MULTI, self.txn.is_some());
            }
        }
        let node = self.last_node;
        if let Some(t) = self.timing.back_mut() {
            t.node = node;
            t.shard = self.last_shard;
        }
        true
    }

    fn route(&mut self, found: Option<&'static Command>, argv: &[&[u8]], raw: Option<&[u8]>) {
        if argv[0].eq_ignore_ascii_case(b"rampart") {
            if !self.client.authed {
                return self.reply_error(NOAUTH);
            }
            if self.txn.is_some() {
                return self.refuse(None, "ERR rampart: 'rampart' is answered by rampart itself and cannot be part of a transaction");
            }

            return self.local(|l| local::rampart(l, argv));
        }
        let Some(mut cmd) = found else {
            return self.refuse(None, &unknown_command(argv));
        };

        if !cmd.subcommands.is_empty() && argv.len() >= 2 {
            match rampart_commands::lookup_sub(cmd, argv[1]) {
                Some(sub) => cmd = sub,
                // The local answer reports unknown subcommands of the commands it owns.
                None if is_local_container(cmd) => {}
                None => {
                    return self.refuse(
                        None,
                        &format!(
                            "ERR unknown subcommand '{}'. Try {} HELP.",
                            sanitize(argv[1], 128),
                            cmd.name.to_ascii_uppercase()
                        ),
                    )
                }
            }
        }
        // deny_commands: answered as a command Redis does not know.
        if self.pool.rt.policy.denied(cmd) {
            return self.refuse(Some(cmd), &unknown_command(argv));
        }
        if !cmd.check_arity(argv.len()) {
            return self.refuse(
                Some(cmd),
                &format!("ERR wrong number of arguments for '{}' command", cmd.name),
            );
        }
        // As in Redis: only commands flagged `no_auth` (AUTH, HELLO, QUIT, RESET) before AUTH.
        if !self.client.authed && !cmd.flags.contains(Flags::NO_AUTH) {
            return self.reply_error(NOAUTH);
        }
        // The user's rules, as Redis checks them: after `no_multi` inside MULTI (the queue
        // refuses those), before anything else. A refusal inside MULTI aborts EXEC.
        if let Some(u) = &self.client.user {
            let no_multi = self.txn.is_some() && cmd.flags.contains(Flags::NO_MULTI);
            if !(u.rules.unrestricted() || no_multi) {
                if let Err(d) = u.rules.check(cmd, argv, &mut self.acl_keys) {
                    let e = crate::session::acl::noperm(cmd, d);
                    return self.refuse(Some(cmd), &e);
                }
                // SORT's BY and GET patterns read keys no key spec names.
                if matches!(cmd.name, "sort" | "sort_ro") {
                    if let Some(e) = u.rules.sort_refusal(argv) {
                        return self.refuse(Some(cmd), e);
                    }
                }
            }
        }
        // RESP2 subscribed mode: only the (un)subscribe commands, PING, QUIT and RESET; a
        // command the servers refused subscribed nothing.
        self.take_back_refused();
        if let Some(e) = pubsub::refusal(&self.subs, self.client.resp3, cmd) {
            return self.refuse(Some(cmd), &e);
        }
        // Clients see one database, the pool's redis_db (SELECT, MOVE and SWAPDB are refused);
        // COPY's DB option would write into another.
        if cmd.name == "copy" && argv.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"db")) {
            return self.refuse(
                Some(cmd),
                "ERR 'copy' with DB is not supported by rampart: only database 0 is available through the proxy",
            );
        }
        if crate::observe::monitor::active()
            && !cmd.flags.contains(Flags::ADMIN)
            && !cmd.flags.contains(Flags::SKIP_MONITOR)
        {
            crate::observe::monitor::feed(&self.pool.rt.conf.name, &self.client.addr, argv);
        }
        match cmd.name {
            "multi" | "exec" | "discard" | "watch" | "unwatch" => {
                return self.transaction(cmd, argv, raw)
            }
            // As in Redis, these leave a transaction at once (the transaction is dropped), and
            // RESET forgets the watched keys.
            "quit" => self.txn = None,
            "reset" => {
                self.txn = None;
                self.end_watch();
                self.leave_pubsub();
            }
            "ping" if self.subs.active() && !self.client.resp3 && argv.len() <= 2 => {
                return self.subscribed_ping(argv)
            }
            _ if self.txn.is_some() => return self.queue(cmd, argv, raw),
            _ => {}
        }
        // ACL is answered from the pool's users; it never reaches a server.
        if cmd.name.starts_with("acl|") {
            return self.local(|l| crate::session::acl::answer(l, cmd, argv));
        }
        if let Some(e) = self.dangerous(cmd) {
            return self.reply_error(&e);
        }
        if cmd.name.starts_with("slowlog") {
            let mut out = BytesMut::new();
            crate::observe::slowlog::command(&self.pool.rt.conf.name, argv, &mut out);
            return self.reply_raw(&out);
        }
        if cmd.route == Route::PubSub {
            if self.mode == Mode::Reads && matches!(cmd.name, "publish" | "spublish") {
                return self.reply_error(&self.reads_only(cmd));
            }
            self.write = matches!(cmd.name, "publish" | "spublish");
            return self.pubsub(cmd, argv, raw);
        }
        self.write = !cmd.is_read();
        if self.mode == Mode::Reads && self.write && !matches!(cmd.route, Route::Local) {
            return self.reply_error(&self.reads_only(cmd));
        }
        if cmd.blocks(argv) {
            return self.block(cmd, argv, raw);
        }
        if cmd.name == "wait" {
            return self.wait(argv);
        }
        match cmd.route {
            Route::Local => self.local(|l| local::answer(l, cmd, argv)),
            Route::Keys => self.forward_keys(cmd, argv, raw),
            Route::FanOut(m) => self.fan_out(cmd, m, argv, raw),
            Route::AllShards(m) => self.all_shards(m, argv, raw),
            Route::Admin(m)
                if self.pool.rt.conf.admin_broadcast || self.pool.rt.policy.allowed(cmd) =>
            {
                if let Some(e) = config_set_refused(cmd, argv) {
                    return self.reply_error(&e);
                }
                self.all_shards(m, argv, raw)
            }
            Route::Admin(_) => self.reply_error(&format!(
                "ERR '{}' {} every shard and is disabled in pool '{}'; set admin_broadcast: true to allow it{}",
                cmd.name,
                if cmd.name == "config|get" { "reads" } else { "changes" },
                self.pool.rt.conf.name,
                if rampart_config::is_dangerous(cmd.name) {
                    " (or list it in allow_commands)"
                } else {
                    ""
                }
            )),
            // A command refused by default that allow_commands lists: to the shard of its
            // keys (MIGRATE), else to every shard, all of which must answer the same.
            Route::Unsupported(_) if self.pool.rt.policy.allowed(cmd) => {
                if cmd.keys.is_empty() {
                    self.all_shards(Merge::Same, argv, raw)
                } else {
                    self.forward_keys(cmd, argv, raw)
                }
            }
            Route::PubSub => {}
            Route::Unsupported(why) => self.reply_error(&format!(
                "ERR '{}' is not supported by rampart: {why}",
                cmd.name
            )),
        }
    }

    /// The refusal of a command that changes a whole server (`rampart_config::DANGEROUS`),
    /// unless the pool's `allow_commands` lists it. Those rampart sends to every shard
    /// (CONFIG SET, REWRITE, RESETSTAT) are also allowed by `admin_broadcast: true`, as
    /// before.
    fn dangerous(&self, cmd: &Command) -> Option<String> {
        // Every such command but those sent to every shard is one rampart cannot route.
        if !matches!(cmd.route, Route::Unsupported(_)) {
            return None;
        }
        let rt = &self.pool.rt;
        if !rt.policy.refused(cmd) {
            return None;
        }
        Some(format!(
            "ERR rampart: '{}' changes a whole server and is refused in pool '{}'; list it in allow_commands to allow it",
            cmd.name.replace('|', " "),
            rt.conf.name
        ))
    }

    fn reads_only(&self, cmd: &Command) -> String {
        format!(
            "ERR rampart: this listener of pool '{}' serves reads only; '{}' goes to the pool's listen or write_listen address",
            self.pool.rt.conf.name, cmd.name
        )
    }

    /// Reply `err` to a request refused before it was routed. Inside `MULTI` it marks the
    /// transaction, as Redis does; `EXEC` itself refused there discards it.
    fn refuse(&mut self, cmd: Option<&Command>, err: &str) {
        match &mut self.txn {
            Some(_) if cmd.is_some_and(|c| c.name == "exec") => {
                self.txn = None;
                self.end_watch();
                self.reply_error(&transaction::exec_refused(err));
            }
            Some(t) => {
                t.refuse();
                self.reply_error(err);
            }
            None => self.reply_error(err),
        }
    }

    pub(crate) fn no_server(&self) {
        self.worker.stats.pools[self.pool.rt.index]
            .pool(PoolStat::ForwardError)
            .add(1);
        let error = self.no_server_error();
        if let Some(pool) = self.pending.closes_when_down() {
            let seq = self.pending.push_waiting();
            return crate::upstream::sink::close_when_down(&self.pending, pool, seq, &error);
        }
        self.reply_error(&error);
    }

    /// The error of a request no server can take: in a cluster pool, the slot no node
    /// serves, in Redis Cluster's words (`CLUSTERDOWN Hash slot not served`, what a node
    /// answers for an unassigned slot), so cluster-aware code sees the error it knows.
    fn no_server_error(&self) -> String {
        if self.pool.rt.cluster.is_some() {
            return CLUSTERDOWN_UNSERVED.to_string();
        }
        format!(
            "ERR rampart: pool '{}' has no server available",
            self.pool.rt.conf.name
        )
    }

    /// Queue `bytes` for `shard`: writes to its primary, reads by the pool's read policy. On
    /// failure the slot gets the error at once.
    fn send_bytes(&mut self, shard: usize, seq: u64, part: u32, bytes: &[u8]) {
        self.send_sink(shard, Sink::new(&self.pending, seq, part), bytes);
    }

    /// Queue `bytes` for `shard`, the reply going to `sink` (see [`Session::send_bytes`]).
    fn send_sink(&mut self, shard: usize, sink: Sink, bytes: &[u8]) {
        let ryw = self.pool.rt.conf.read_your_writes;
        let access = if self.write {
            if let Some(window) = ryw {
                let until = self.now + window;
                match self.ryw.iter_mut().find(|(s, _)| *s == shard) {
                    Some(e) => e.1 = until,
                    None => self.ryw.push((shard, until)),
                }
            }
            Access::Write
        } else if self.mode == Mode::Writes
            || (ryw.is_some()
                && self
                    .ryw
                    .iter()
                    .any(|&(s, until)| s == shard && self.now < until))
        {
            Access::ReadPrimary
        } else {
            Access::Read
        };
        let node = route::send(
            &self.pool,
            shard,
            crate::upstream::pool::client_key(self.client.id, self.client.resp3),
            sink,
            self.deadline,
            bytes,
            access,
            None,
        );
        self.last_node = if self.last_node == 0 || self.last_node == node {
            node
        } else {
            u64::MAX
        };
        self.last_shard = shard as u32;
    }

    /// Encode a request with `write` and queue it for `shard`.
    pub(crate) fn send(
        &mut self,
        shard: usize,
        seq: u64,
        part: u32,
        write: impl FnOnce(&mut BytesMut),
    ) {
        let mut tmp = std::mem::take(&mut self.tmp);
        tmp.clear();
        write(&mut tmp);
        self.send_bytes(shard, seq, part, &tmp);
        // A large split request (MSET of big values) must not pin its buffer.
        if tmp.capacity() > 64 * 1024 {
            tmp = BytesMut::new();
        }
        self.tmp = tmp;
    }

    pub(crate) fn forward_whole(&mut self, shard: usize, argv: &[&[u8]], raw: Option<&[u8]>) {
        let seq = self.pending.push_waiting();
        match raw {
            Some(r) => self.send_bytes(shard, seq, 0, r),
            None => self.send(shard, seq, 0, |out| encode::command(out, argv)),
        }
    }

    /// Fill `self.keys` with the key positions; false (after replying) when they are invalid.
    fn find_keys(&mut self, cmd: &Command, argv: &[&[u8]]) -> bool {
        self.keys.clear();
        match cmd.key_indices(argv, &mut self.keys) {
            Ok(()) => true,
            Err(e) => {
                self.reply_error(&format!("ERR {e}"));
                false
            }
        }
    }

    /// In a cluster pool, whether the keys at `self.keys` are in more than one slot.
    fn spans_slots(&self, argv: &[&[u8]]) -> bool {
        let rt = &self.pool.rt;
        if rt.cluster.is_none() {
            return false;
        }
        let mut slots = self
            .keys
            .iter()
            .filter_map(|&k| argv.get(k).and_then(|key| rt.slot_of(key)));
        match slots.next() {
            Some(first) => slots.any(|s| s != first),
            None => false,
        }
    }

    /// Fill `self.shards` with the shard of each key; false (after replying) when a key has none.
    fn map_keys(&mut self, argv: &[&[u8]]) -> bool {
        self.shards.clear();
        for &k in &self.keys {
            match argv.get(k).and_then(|key| self.pool.rt.shard_for_key(key)) {
                Some(s) => self.shards.push(s),
                None => {
                    self.no_server();
                    return false;
                }
            }
        }
        true
    }

    fn forward_keys(&mut self, cmd: &Command, argv: &[&[u8]], raw: Option<&[u8]>) {
        if !self.find_keys(cmd, argv) {
            return;
        }
        let server = if self.keys.is_empty() {
            self.pool.rt.any_shard()
        } else {
            if !self.map_keys(argv) {
                return;
            }
            let first = self.shards[0];
            if self.spans_slots(argv) {
                return self.reply_error(CROSSSLOT);
            }
            if self.shards.iter().any(|&s| s != first) {
                return self.reply_error(CROSS_SHARD);
            }
            Some(first)
        };
        match server {
            Some(s) => self.forward_whole(s, argv, raw),
            None => self.no_server(),
        }
    }

    /// The one shard of the keys of a command that runs on one node (WATCH, a blocking
    /// command); `None` when it has been answered instead: an error of its keys, no server,
    /// keys in several slots (a cluster pool: `CROSSSLOT`) or on several shards (`cross`).
    fn one_shard(&mut self, cmd: &Command, argv: &[&[u8]], cross: &str) -> Option<usize> {
        if !self.find_keys(cmd, argv) || !self.map_keys(argv) {
            return None;
        }
        let Some(&shard) = self.shards.first() else {
            self.no_server();
            return None;
        };
        if self.spans_slots(argv) {
            self.reply_error(CROSSSLOT);
            return None;
        }
        if self.shards.iter().any(|&s| s != shard) {
            self.reply_error(cross);
            return None;
        }
        Some(shard)
    }
}

/// The position of `argv`'s subcommand among the subcommands of `cmd`, if it names one.
fn sub_position(cmd: &'static Command, argv: &[&[u8]]) -> Option<usize> {
    if cmd.subcommands.is_empty() {
        return None;
    }
    let sub = rampart_commands::lookup_sub(cmd, argv.get(1)?)?;
    cmd.subcommands.iter().position(|s| std::ptr::eq(s, sub))
}

/// The request as RESP bytes of its own: `raw` when it arrived as RESP, else `argv` encoded
/// (an inline request), for a task that outlives the read buffer.
fn owned_request(argv: &[&[u8]], raw: Option<&[u8]>) -> Vec<u8> {
    match raw {
        Some(r) => r.to_vec(),
        None => {
            let mut b = BytesMut::new();
            encode::command(&mut b, argv);
            b.to_vec()
        }
    }
}

/// Server parameters that CONFIG SET through the proxy may not change, because rampart's
/// connections or routing depend on them (documented in docs/CONFIG.md at `admin_broadcast`).
/// A name ending in `-` stands for every parameter that starts with it.
pub const PROTECTED_PARAMETERS: &[&str] = &[
    "requirepass",
    "masterauth",
    "masteruser",
    "port",
    "bind",
    "bind-source-addr",
    "unixsocket",
    "unixsocketperm",
    "protected-mode",
    "maxclients",
    "replica-read-only",
    "slave-read-only",
    "replica-announce-ip",
    "slave-announce-ip",
    "replica-announce-port",
    "slave-announce-port",
    "tls-",
];

/// The refusal of a `CONFIG SET` that names a parameter rampart depends on, if `cmd` is one.
fn config_set_refused(cmd: &Command, argv: &[&[u8]]) -> Option<String> {
    if cmd.name != "config|set" {
        return None;
    }
    let p = argv.iter().skip(2).step_by(2).find(|p| protected(p))?;
    Some(format!(
        "ERR rampart: CONFIG SET '{}' is refused: rampart depends on this parameter to reach and route to its backends; change it on the servers and in rampart's configuration",
        sanitize(p, 64)
    ))
}

/// Whether CONFIG SET of the parameter `name` is refused (see [`PROTECTED_PARAMETERS`]).
fn protected(name: &&[u8]) -> bool {
    let name = name.to_ascii_lowercase();
    PROTECTED_PARAMETERS
        .iter()
        .any(|p| match p.strip_suffix('-') {
            Some(prefix) => name.starts_with(p.as_bytes()) || name == prefix.as_bytes(),
            None => name == p.as_bytes(),
        })
}

/// One INFO keyspace request of a transaction's INFO: its part of EXEC's gather, its shard,
/// the command.
type KeyspaceSend = (u32, usize, Vec<Vec<u8>>);

/// `msg` as one RESP error reply.
fn error_bytes(msg: &str) -> bytes::Bytes {
    let mut b = BytesMut::with_capacity(msg.len() + 3);
    encode::error(&mut b, msg);
    b.freeze()
}

/// Container commands whose subcommands the proxy answers itself with its own dispatch.
fn is_local_container(cmd: &Command) -> bool {
    matches!(cmd.route, Route::Local)
}

/// Redis' reply to an unknown command, arguments quoted up to 128 bytes in all.
pub fn unknown_command(argv: &[&[u8]]) -> String {
    let mut args = String::new();
    for a in &argv[1..] {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        args.push('\'');
        args.push_str(&sanitize(a, room));
        args.push_str("' ");
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {}",
        sanitize(argv[0], 128),
        args
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_command_uses_redis_wording() {
        let argv: Vec<&[u8]> = vec![b"foo", b"a", b"b c"];
        assert_eq!(
            unknown_command(&argv),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b c' "
        );
        let none: Vec<&[u8]> = vec![b"foo"];
        assert_eq!(
            unknown_command(&none),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }

    #[test]
    fn error_text_never_spans_lines() {
        assert_eq!(sanitize(b"a\r\nb", 10), "a  b");
        assert_eq!(sanitize(b"abcdef", 3), "abc");
    }
}
