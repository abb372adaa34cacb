//! A session's transactions: MULTI, EXEC, DISCARD, WATCH and UNWATCH. MULTI queues the
//! commands in the session ([`crate::session::transaction`]); EXEC sends them to the shard's
//! primary in one piece (on the watch's leased connection when the session WATCHes,
//! [`crate::session::watch`]), or answers an error and sends nothing.

use std::rc::Rc;
use std::time::Duration;

use rampart_commands::{Command, Route};
use resp::encode;

use super::{config_set_refused, error_bytes, owned_request, KeyspaceSend, Session, CROSSSLOT};
use crate::reply::merge::{splice, Merger};
use crate::session::local::{self, Answer};
use crate::session::primary::lease_primary;
use crate::session::transaction::{self, Transaction};
use crate::session::watch::{self, Watch};
use crate::text::sanitize;
use crate::topology::Mode;
use crate::upstream::sink::Sink;
use crate::upstream::subscriber::{Kind, Placement};

impl Session {
    /// MULTI, EXEC, DISCARD, WATCH and UNWATCH.
    pub(super) fn transaction(
        &mut self,
        cmd: &'static Command,
        argv: &[&[u8]],
        raw: Option<&[u8]>,
    ) {
        let inside = self.txn.is_some();
        match (cmd.name, inside) {
            ("multi", false) => {
                self.txn = Some(Transaction::new(self.generation));
                self.reply_raw(b"+OK\r\n");
            }
            ("multi", true) => self.reply_error("ERR MULTI calls can not be nested"),
            ("exec", false) => self.reply_error("ERR EXEC without MULTI"),
            ("discard", false) => self.reply_error("ERR DISCARD without MULTI"),
            ("discard", true) => {
                self.txn = None;
                self.end_watch();
                self.reply_raw(b"+OK\r\n");
            }
            ("exec", true) => self.exec(),
            ("watch", true) => self.reply_error("ERR WATCH inside MULTI is not allowed"),
            ("watch", false) => self.watch(cmd, argv, raw),
            ("unwatch", false) => {
                self.end_watch();
                self.reply_raw(b"+OK\r\n");
            }
            _ => self.queue(cmd, argv, raw),
        }
    }

    /// A command inside MULTI: checked and queued (`QUEUED`), or refused (the transaction
    /// will answer EXECABORT).
    pub(super) fn queue(&mut self, cmd: &'static Command, argv: &[&[u8]], raw: Option<&[u8]>) {
        let rt = &self.pool.rt;
        let broadcast = rt.conf.admin_broadcast || rt.policy.allowed(cmd);
        match transaction::admit(cmd, rt.shards.len() == 1, broadcast) {
            Ok(transaction::Queued::Server) => {}
            Ok(transaction::Queued::Local) => return self.queue_local(cmd, argv),
            Err(e) => return self.refuse(Some(cmd), &e),
        }
        if let Some(e) = self.dangerous(cmd) {
            return self.refuse(Some(cmd), &e);
        }
        if let Some(e) = config_set_refused(cmd, argv) {
            return self.refuse(Some(cmd), &e);
        }
        if self.mode == Mode::Reads && !cmd.is_read() {
            let e = self.reads_only(cmd);
            return self.refuse(Some(cmd), &e);
        }
        self.keys.clear();
        if let Err(e) = cmd.key_indices(argv, &mut self.keys) {
            return self.refuse(Some(cmd), &format!("ERR {e}"));
        }
        self.shards.clear();
        if cmd.route == Route::PubSub {
            // PUBLISH / SPUBLISH: their channel's shard (a message to a channel heard on
            // every shard, as a keyevent one, may run on any).
            self.keys.clear();
            let kind = if cmd.name == "spublish" {
                Kind::Shard
            } else {
                Kind::Channel
            };
            match argv.get(1).map(|c| self.shard_for(kind, c)) {
                Some(Some(Placement::One(s))) => self.shards.push(s),
                Some(Some(Placement::All)) | None => {}
                Some(None) => {
                    let e = self.no_server_error();
                    return self.refuse(Some(cmd), &e);
                }
            }
        }
        for &k in &self.keys {
            match argv.get(k).and_then(|key| self.pool.rt.shard_for_key(key)) {
                Some(s) => self.shards.push(s),
                None => {
                    let e = self.no_server_error();
                    return self.refuse(Some(cmd), &e);
                }
            }
        }
        if self.pool.rt.cluster.is_some() {
            // A cluster runs a transaction on the node of its one slot: the transaction
            // notes slots, and EXEC finds their shard. A shard channel has a slot, as a
            // key has: SPUBLISH counts it.
            if cmd.name == "spublish" {
                self.keys.push(1);
            }
            if self.spans_slots(argv) {
                return self.refuse(Some(cmd), CROSSSLOT);
            }
            let rt = &self.pool.rt;
            self.shards = self
                .keys
                .iter()
                .filter_map(|&k| argv.get(k).and_then(|key| rt.slot_of(key)))
                .map(usize::from)
                .collect();
        }
        let Some(t) = self.txn.as_mut() else {
            return;
        };
        match t.push(argv, raw, self.shards.iter().copied()) {
            Ok(()) => self.reply_raw(b"+QUEUED\r\n"),
            Err(e) => self.reply_error(&e),
        }
    }

    /// A command rampart answers itself, inside MULTI: queued aside and answered at EXEC
    /// (see `session::transaction`), or refused as Redis refuses it while queueing.
    fn queue_local(&mut self, cmd: &'static Command, argv: &[&[u8]]) {
        // COMMAND's own container with an unknown subcommand (CLIENT's is refused by
        // `admit`): Redis refuses it while queueing.
        if cmd.name == "command" && argv.len() > 1 {
            let e = format!(
                "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                sanitize(argv[1], 128)
            );
            return self.refuse(Some(cmd), &e);
        }
        // A name set at EXEC would stay set when a watched key changed and nothing ran.
        if cmd.name == "client|setname" && self.watch.as_ref().is_some_and(|w| !w.is_void()) {
            return self.refuse(Some(cmd), transaction::SETNAME_WATCHED);
        }
        let Some(t) = self.txn.as_mut() else {
            return;
        };
        match t.push_local(cmd, argv) {
            Ok(()) => self.reply_raw(b"+QUEUED\r\n"),
            Err(e) => self.reply_error(&e),
        }
    }

    /// EXEC's reply slot: a plain one, or (the transaction queued commands rampart answers
    /// itself) a gather that splices rampart's answers, computed now, into the server's
    /// array. Returns the slot and the INFO keyspace requests to send for its later parts
    /// (part, shard, command), once the run is sent.
    fn exec_slot(&mut self, locals: Vec<transaction::Local>) -> (u64, Vec<KeyspaceSend>) {
        if locals.is_empty() {
            return (self.pending.push_waiting(), Vec::new());
        }
        let mut answers = Vec::with_capacity(locals.len());
        let mut sends = Vec::new();
        let mut parts = 1u32;
        for l in locals {
            let argv: Vec<&[u8]> = l.argv.iter().map(Vec::as_slice).collect();
            let answer = match self.local_answer(|c| local::answer(c, l.cmd, &argv)) {
                Answer::Reply(out) => splice::Answer::Ready(out.freeze()),
                Answer::Broadcast(merger, argv) => {
                    let shards: Vec<usize> = (0..self.pool.rt.shards.len())
                        .filter(|&s| !self.pool.rt.shards[s].is_ejected())
                        .collect();
                    if shards.is_empty() {
                        splice::Answer::Ready(error_bytes(&self.no_server_error()))
                    } else {
                        for &s in &shards {
                            sends.push((parts, s, argv.clone()));
                            parts += 1;
                        }
                        splice::Answer::Merged {
                            merger: Box::new(merger),
                            parts: shards.len(),
                        }
                    }
                }
                Answer::Later => splice::Answer::Ready(error_bytes(&format!(
                    "ERR rampart: '{}' cannot be answered inside a transaction",
                    l.cmd.name
                ))),
            };
            answers.push(splice::Spliced { at: l.at, answer });
        }
        let seq = self
            .pending
            .push_gather(parts as usize, Merger::Splice(answers));
        (seq, sends)
    }

    /// The INFO keyspace requests of [`Session::exec_slot`], to their shards (the node the
    /// run went to stays the one EXEC is timed against).
    fn exec_sends(&mut self, seq: u64, sends: Vec<KeyspaceSend>) {
        let (node, shard, write) = (self.last_node, self.last_shard, self.write);
        self.write = false;
        for (part, s, argv) in sends {
            let argv: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
            self.send(s, seq, part, |out| encode::command(out, &argv));
        }
        (self.last_node, self.last_shard, self.write) = (node, shard, write);
    }

    /// EXEC: the whole transaction to its shard's primary in one piece, or an error and
    /// nothing sent.
    fn exec(&mut self) {
        let Some(t) = self.txn.take() else {
            return self.reply_error("ERR EXEC without MULTI");
        };
        let watching = self.watch.take().filter(|w| !w.is_void());
        if t.is_empty() && watching.is_none() {
            return self.reply_raw(b"*0\r\n");
        }
        let cluster = self.pool.rt.cluster.is_some();
        let mut run_slot = None;
        let run = match t.finish(self.generation) {
            Ok(mut run) if cluster => {
                // The run noted its slot: the shard serving it now.
                if let Some(slot) = run.shard {
                    run_slot = Some(slot as u16);
                    let owner = self.pool.rt.shard_for_slot(slot as u16);
                    match owner {
                        Some(s) => run.shard = Some(s),
                        None => {
                            if let Some(w) = watching {
                                watch::end(&w, self.pool.rt.timeout());
                            }
                            return self.no_server();
                        }
                    }
                }
                run
            }
            Ok(run) => run,
            Err(e) => {
                let e = if cluster && e == transaction::CROSS_SHARD {
                    CROSSSLOT.to_string()
                } else {
                    e
                };
                // As in Redis, a discarded transaction forgets the watched keys.
                if let Some(w) = watching {
                    watch::end(&w, self.pool.rt.timeout());
                }
                return self.reply_error(&e);
            }
        };
        if let Some(w) = watching {
            return self.exec_watched(&w, run, run_slot);
        }
        // Only commands rampart answers: no server has anything to run.
        if run.skip == 1 && !run.locals.is_empty() {
            let (seq, sends) = self.exec_slot(run.locals);
            self.pending.deliver(seq, 0, b"*0\r\n");
            return self.exec_sends(seq, sends);
        }
        let Some(shard) = run.shard.or_else(|| self.pool.rt.any_shard()) else {
            return self.no_server();
        };
        self.write = true;
        let (seq, sends) = self.exec_slot(run.locals);
        let mut sink = Sink::new(&self.pending, seq, 0);
        sink.skip = run.skip;
        self.send_sink(shard, sink, &run.bytes);
        self.exec_sends(seq, sends);
    }

    /// EXEC of a watching session: the run goes on the watch's connection (see
    /// `session::watch`), if its keys are on the watched shard, or (a cluster pool) in a
    /// watched slot: the map may place that slot elsewhere by now, and the watch's node
    /// then refuses the run whole (EXEC answers nil, nothing ran).
    fn exec_watched(&mut self, w: &Rc<Watch>, run: transaction::Run, slot: Option<u16>) {
        if !w.same_placement(&self.pool.rt) || w.placement_moved() {
            // A forced reload changed where keys live since WATCH, or an ejected server came
            // back to the ring: the watched keys may be on another shard now, and cannot be
            // checked where they were watched.
            watch::end(w, self.pool.rt.timeout());
            let why = "the pool's key placement changed since WATCH";
            return self.reply_raw(&watch::lost(why, self.client.resp3));
        }
        let elsewhere = run.shard.is_some_and(|s| s != w.shard());
        if elsewhere && !slot.is_some_and(|s| w.holds_slot(s)) {
            watch::end(w, self.pool.rt.timeout());
            // The watched server left the ring (auto_eject_hosts) since WATCH: the keys
            // moved with the ring, not the transaction; say so rather than suggest a tag.
            let ejected = self
                .pool
                .rt
                .shards
                .get(w.shard())
                .is_some_and(|s| s.is_ejected());
            if ejected {
                let nil = watch::lost("its server was ejected since WATCH", self.client.resp3);
                return self.reply_raw(&nil);
            }
            return self.reply_error(transaction::CROSS_SHARD);
        }
        self.write = true;
        let (seq, sends) = self.exec_slot(run.locals);
        let sink = Sink::new(&self.pending, seq, 0);
        let conf = &self.pool.rt.conf;
        watch::exec(
            w,
            (run.bytes.to_vec(), run.skip),
            sink,
            self.pool.rt.timeout(),
            (conf.min_replica_acks > 0)
                .then_some((conf.min_replica_acks, conf.min_replica_acks_timeout)),
            self.client.resp3,
        );
        self.last_shard = w.shard() as u32;
        self.exec_sends(seq, sends);
    }

    /// WATCH outside MULTI: the keys' shard must be the watched one (if any); the first
    /// WATCH leases a dedicated connection to the shard's primary.
    fn watch(&mut self, cmd: &Command, argv: &[&[u8]], raw: Option<&[u8]>) {
        let Some(shard) = self.one_shard(cmd, argv, watch::CROSS_SHARD) else {
            return;
        };
        if self.watch.as_ref().is_some_and(|w| w.is_void()) {
            self.watch = None;
        }
        let mut extra = Duration::ZERO;
        let w = match &self.watch {
            Some(w) if w.shard() != shard => return self.reply_error(watch::OTHER_SHARD),
            Some(w) => Rc::clone(w),
            None => {
                let (lease, wait) = match lease_primary(
                    &self.pool,
                    shard,
                    self.client.resp3,
                    &mut self.last_node,
                ) {
                    Ok(l) => l,
                    Err(f) => return self.fail_now(f),
                };
                let follow = self
                    .pool
                    .rt
                    .cluster
                    .is_some()
                    .then(|| Rc::clone(&self.pool));
                let placed_by = std::sync::Arc::clone(&self.pool.rt);
                let w = Watch::new(shard, lease, (follow, placed_by), self.client.resp3);
                self.watch = Some(Rc::clone(&w));
                extra = wait;
                w
            }
        };
        let request = owned_request(argv, raw);
        let seq = self.pending.push_waiting();
        let sink = Sink::new(&self.pending, seq, 0);
        let slot = (self.keys.first())
            .and_then(|&k| argv.get(k))
            .and_then(|k| self.pool.rt.slot_of(k));
        watch::watch(&w, request, slot, sink, self.deadline + extra);
        self.last_shard = shard as u32;
    }

    /// UNWATCH, DISCARD, RESET: the session's watch ends (its connection goes back clean).
    pub(super) fn end_watch(&mut self) {
        if let Some(w) = self.watch.take() {
            watch::end(&w, self.pool.rt.timeout());
        }
    }
}
