//! A session's Pub/Sub: its subscriptions, the subscribed-mode rules, and the Pub/Sub commands.
//!
//! The session keeps its own channels, patterns and shard channels (for its counts and its
//! replies) and registers each with the worker's subscriber hub
//! ([`crate::upstream::subscriber`]), which holds the server subscriptions. The replies are
//! Redis' own: `subscribe`/`unsubscribe`/... arrays with the client's count (channels and
//! patterns for the classic commands, shard channels for the shard ones), RESP3 push frames
//! for a RESP3 session. A RESP2 session with any subscription accepts only the subscribe
//! commands, PING, QUIT and RESET (Redis' error otherwise); a RESP3 session accepts any.
//! A subscribe command's replies wait until the server took every subscription the worker
//! did not hold yet, so a PUBLISH sent after reading them reaches the client. When a server
//! refuses one (the servers' user may not use that channel: `NOPERM`), the command's reply
//! is the server's error and its subscriptions are taken back before the session's next
//! command, as Redis subscribes nothing of a refused command; until the servers answered,
//! the next command waits (see `Session::handle_found`), so it never sees a subscribed mode
//! the client may not be in.
//!
//! Placement: a channel lives on the shard of the key of the same name
//! ([`crate::upstream::subscriber::placement`]), on every shard in a pool with
//! `distribution: random`; PUBLISH and SPUBLISH go there and answer
//! that shard's receiver count (each worker's subscriber connection counts as one receiver).
//! PUBSUB CHANNELS and SHARDCHANNELS are the union over the shards, NUMSUB and SHARDNUMSUB
//! ask each channel's shard, NUMPAT is the largest count over the shards: every worker
//! subscribes each pattern on every shard, so that is the number of distinct patterns
//! subscribed through the proxy (and by clients of the servers themselves).

use std::collections::HashSet;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use rampart_commands::Command;
use resp::encode;

use crate::reply::merge::Merger;
use crate::session::dispatch::Session;
use crate::upstream::listener::{Listener, Waiter};
use crate::upstream::subscriber::{placement, Kind, Placement};

/// Commands a RESP2 session may send while it holds subscriptions (Redis' list).
const ALLOWED: &[&str] = &[
    "subscribe",
    "ssubscribe",
    "psubscribe",
    "unsubscribe",
    "sunsubscribe",
    "punsubscribe",
    "ping",
    "quit",
    "reset",
];

/// A session's subscriptions.
#[derive(Default)]
pub struct Subscriptions {
    listener: Option<Rc<Listener>>,
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    shard: HashSet<Bytes>,
}

impl Subscriptions {
    /// Channels, patterns and shard channels held together.
    pub fn total(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shard.len()
    }

    /// The session is in subscribed mode (holds any subscription).
    pub fn active(&self) -> bool {
        self.total() > 0
    }

    /// The session's listener, once it subscribed to anything.
    pub fn listener(&self) -> Option<&Rc<Listener>> {
        self.listener.as_ref()
    }

    fn set(&mut self, kind: Kind) -> &mut HashSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard,
        }
    }

    /// Whether `rules` allow every channel, shard channel and pattern held, as Redis 7.0
    /// checks a subscriber's when its user's rules change (a pattern must be one of the
    /// user's channel patterns, literally).
    pub fn allowed_by(&self, rules: &rampart_commands::acl::Rules) -> bool {
        self.channels
            .iter()
            .chain(&self.shard)
            .all(|c| rules.channel_allowed(c, false))
            && self.patterns.iter().all(|p| rules.channel_allowed(p, true))
    }

    /// The count Redis puts in a reply about `kind`.
    fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.shard.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }
}

/// What a Pub/Sub command does.
fn kind_of(name: &str) -> Option<(Kind, bool)> {
    Some(match name {
        "subscribe" => (Kind::Channel, true),
        "unsubscribe" => (Kind::Channel, false),
        "psubscribe" => (Kind::Pattern, true),
        "punsubscribe" => (Kind::Pattern, false),
        "ssubscribe" => (Kind::Shard, true),
        "sunsubscribe" => (Kind::Shard, false),
        _ => return None,
    })
}

/// The reply name of a (un)subscribe command.
fn reply_word(kind: Kind, on: bool) -> &'static [u8] {
    match (kind, on) {
        (Kind::Channel, true) => b"subscribe",
        (Kind::Channel, false) => b"unsubscribe",
        (Kind::Pattern, true) => b"psubscribe",
        (Kind::Pattern, false) => b"punsubscribe",
        (Kind::Shard, true) => b"ssubscribe",
        (Kind::Shard, false) => b"sunsubscribe",
    }
}

/// One `[word, name, count]` reply, as an array (RESP2) or a push (RESP3); `None` name is
/// the nil of an unsubscribe with nothing to leave.
fn confirmation(out: &mut BytesMut, resp3: bool, word: &[u8], name: Option<&[u8]>, count: usize) {
    out.extend_from_slice(if resp3 { b">3\r\n" } else { b"*3\r\n" });
    encode::bulk(out, word);
    match name {
        Some(n) => encode::bulk(out, n),
        None => encode::null_for(out, resp3),
    }
    encode::integer(out, count as i64);
}

/// Redis' refusal of a command in RESP2 subscribed mode, or `None` when it is allowed.
pub fn refusal(subs: &Subscriptions, resp3: bool, cmd: &Command) -> Option<String> {
    if resp3 || !subs.active() || ALLOWED.contains(&cmd.name) {
        return None;
    }
    Some(format!(
        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
        cmd.name
    ))
}

impl Session {
    /// A Pub/Sub command (`Route::PubSub`).
    pub fn pubsub(&mut self, cmd: &'static Command, argv: &[&[u8]], raw: Option<&[u8]>) {
        if let Some((kind, on)) = kind_of(cmd.name) {
            // CLIENT REPLY OFF and SKIP do not silence the confirmations of a (un)subscribe:
            // Redis sends them all the same, in RESP2 and RESP3.
            self.pending.unmute();
            if kind == Kind::Shard && on && self.shard_channels_span_slots(&argv[1..]) {
                // As Redis Cluster: the shard channels of one SSUBSCRIBE share a slot.
                return self.reply_error(crate::session::dispatch::CROSSSLOT);
            }
            return if on {
                self.subscribe(kind, &argv[1..])
            } else {
                self.unsubscribe(kind, &argv[1..])
            };
        }
        match cmd.name {
            "publish" | "spublish" => self.publish(argv, raw),
            "pubsub|channels" | "pubsub|shardchannels" => self.broadcast(Merger::Union, argv, raw),
            "pubsub|numpat" => self.broadcast(Merger::Max, argv, raw),
            "pubsub|numsub" | "pubsub|shardnumsub" => self.numsub(argv),
            _ => match self.pool.rt.any_shard() {
                Some(s) => self.forward_whole(s, argv, raw),
                None => self.no_server(),
            },
        }
    }

    /// In a cluster pool, whether `names` are in more than one slot.
    fn shard_channels_span_slots(&self, names: &[&[u8]]) -> bool {
        let rt = &self.pool.rt;
        let mut slots = names.iter().filter_map(|n| rt.slot_of(n));
        match slots.next() {
            Some(first) => slots.any(|s| s != first),
            None => false,
        }
    }

    /// PING while subscribed in RESP2: Redis' `pong` array.
    pub fn subscribed_ping(&self, argv: &[&[u8]]) {
        let mut out = BytesMut::new();
        encode::array_header(&mut out, 2);
        encode::bulk(&mut out, b"pong");
        encode::bulk(&mut out, argv.get(1).copied().unwrap_or(b""));
        self.reply_raw(&out);
    }

    /// Where the channel, pattern or shard channel `name` is subscribed and published. In
    /// a pool with `distribution: random`, which places each key on any server, everywhere:
    /// each PUBLISH goes to any one shard and is heard there once.
    pub(super) fn shard_for(&self, kind: Kind, name: &[u8]) -> Option<Placement> {
        let rt = &self.pool.rt;
        if rt.cluster.is_none() && rt.conf.distribution == hashkit::Distribution::Random {
            return Some(Placement::All);
        }
        placement(kind, name, |k| rt.shard_for_key(k))
    }

    fn subscribe(&mut self, kind: Kind, names: &[&[u8]]) {
        // Checked whole before anything changes: placement and the per-client bound.
        let mut places = Vec::with_capacity(names.len());
        let mut new: HashSet<&[u8]> = HashSet::new();
        for n in names {
            match self.shard_for(kind, n) {
                Some(p) => places.push(p),
                None => return self.no_server(),
            }
            if !self.subs.set(kind).contains(*n) {
                new.insert(n);
            }
        }
        let max = self.pool.rt.conf.pubsub.max_per_client as usize;
        if self.subs.total() + new.len() > max {
            return self.reply_error(&format!(
                "ERR rampart: this client would hold more than max_subscriptions_per_client ({max}) channels and patterns; nothing was subscribed"
            ));
        }
        let resp3 = self.client.resp3;
        let listener = match &self.subs.listener {
            Some(l) => Rc::clone(l),
            None => {
                let l = Listener::new(&self.pending, resp3, &self.pool.rt.conf.pubsub);
                self.subs.listener = Some(Rc::clone(&l));
                l
            }
        };
        let seq = self.pending.push_waiting();
        let waiter = Waiter::new(&self.pending, seq, &listener);
        let hub = Rc::clone(&self.pool.pubsub);
        let shards = self.pool.rt.shards.len();
        let mut out = BytesMut::new();
        for (n, at) in names.iter().zip(&places) {
            let name = Bytes::copy_from_slice(n);
            if self.subs.set(kind).insert(name.clone()) {
                waiter.added(kind, name);
                hub.subscribe(&listener, (kind, n), at, shards, &waiter);
            }
            let count = self.subs.count(kind);
            confirmation(&mut out, resp3, reply_word(kind, true), Some(n), count);
        }
        self.note_mode();
        waiter.arm(out);
    }

    fn unsubscribe(&mut self, kind: Kind, names: &[&[u8]]) {
        let resp3 = self.client.resp3;
        let word = reply_word(kind, false);
        let mut out = BytesMut::new();
        let all: Vec<Bytes>;
        let names: Vec<&[u8]> = if names.is_empty() {
            all = self.subs.set(kind).iter().cloned().collect();
            if all.is_empty() {
                confirmation(&mut out, resp3, word, None, self.subs.count(kind));
            }
            all.iter().map(|b| b.as_ref()).collect()
        } else {
            names.to_vec()
        };
        for n in names {
            if self.subs.set(kind).remove(n) {
                if let Some(l) = &self.subs.listener {
                    self.pool.pubsub.unsubscribe(l, kind, n);
                }
            }
            confirmation(&mut out, resp3, word, Some(n), self.subs.count(kind));
        }
        self.note_mode();
        self.reply_raw(&out);
    }

    /// Take back the subscriptions of commands a server refused (the client got the
    /// server's error for them, as Redis subscribes nothing of a refused command).
    pub fn take_back_refused(&mut self) {
        let Some(l) = &self.subs.listener else {
            return;
        };
        let refused = l.take_refused();
        if refused.is_empty() {
            return;
        }
        let l = Rc::clone(l);
        for (kind, n) in refused {
            if self.subs.set(kind).remove(&n) {
                self.pool.pubsub.unsubscribe(&l, kind, &n);
            }
        }
        self.note_mode();
    }

    /// Leave every subscription (RESET, the end of the session), with no reply.
    pub fn leave_pubsub(&mut self) {
        let Some(l) = self.subs.listener.take() else {
            return;
        };
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            for n in std::mem::take(self.subs.set(kind)) {
                self.pool.pubsub.unsubscribe(&l, kind, &n);
            }
        }
        // Messages held for the session go with it.
        drop(l);
        self.note_mode();
    }

    /// The session's protocol changed (HELLO, RESET): later messages are framed for it.
    pub fn pubsub_protocol(&self) {
        if let Some(l) = &self.subs.listener {
            l.set_resp3(self.client.resp3);
        }
    }

    /// What `CLIENT LIST` shows of the session's subscriptions: the `P` flag and the counts.
    fn note_mode(&self) {
        if let Some(e) = &self.client.entry {
            let s = &self.subs;
            e.set_flag(crate::observe::clients::FLAG_PUBSUB, s.active());
            e.set_subscriptions([s.channels.len(), s.patterns.len(), s.shard.len()]);
        }
    }

    fn publish(&mut self, argv: &[&[u8]], raw: Option<&[u8]>) {
        let kind = if argv[0].eq_ignore_ascii_case(b"spublish") {
            Kind::Shard
        } else {
            Kind::Channel
        };
        let shard = match self.shard_for(kind, argv[1]) {
            Some(Placement::One(s)) if kind == Kind::Channel => Some(self.any_live(s)),
            Some(Placement::One(s)) => Some(s),
            // Subscribed on every shard by every worker: any shard reaches them all.
            Some(Placement::All) => self.pool.rt.any_shard(),
            None => None,
        };
        match shard {
            Some(s) => self.forward_whole(s, argv, raw),
            None => self.no_server(),
        }
    }

    /// Where a classic `PUBLISH` placed on `shard` goes: there, but in a cluster pool, whose
    /// nodes all hear every `PUBLISH`, to another shard with a primary taking requests when
    /// `shard` has none (its node killed and not yet replaced).
    fn any_live(&self, shard: usize) -> usize {
        let rt = &self.pool.rt;
        let live = |s: usize| {
            rt.shards
                .get(s)
                .is_some_and(|sh| sh.write_target(&sh.view()).is_some())
        };
        if rt.cluster.is_none() || live(shard) {
            return shard;
        }
        let n = rt.shards.len();
        (1..n)
            .map(|i| (shard + i) % n)
            .find(|&s| live(s))
            .unwrap_or(shard)
    }

    /// PUBSUB NUMSUB / SHARDNUMSUB: each channel asked of its shard, the pairs put back in
    /// the order of the request.
    fn numsub(&mut self, argv: &[&[u8]]) {
        let kind = if argv[1].eq_ignore_ascii_case(b"shardnumsub") {
            Kind::Shard
        } else {
            Kind::Channel
        };
        let names = &argv[2..];
        if names.is_empty() {
            let Some(s) = self.pool.rt.any_shard() else {
                return self.no_server();
            };
            return self.forward_whole(s, argv, None);
        }
        let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let s = match self.shard_for(kind, n) {
                Some(Placement::One(s)) => s,
                Some(Placement::All) => match self.pool.rt.any_shard() {
                    Some(s) => s,
                    None => return self.no_server(),
                },
                None => return self.no_server(),
            };
            match groups.iter_mut().find(|g| g.0 == s) {
                Some(g) => g.1.push(i as u32),
                None => groups.push((s, vec![i as u32])),
            }
        }
        let merger = Merger::Pairs {
            total: names.len(),
            positions: groups.iter().map(|g| g.1.clone()).collect(),
        };
        let seq = self.pending.push_gather(groups.len(), merger);
        for (part, (shard, idx)) in groups.iter().enumerate() {
            self.send(*shard, seq, part as u32, |out| {
                encode::array_header(out, 2 + idx.len());
                encode::bulk(out, argv[0]);
                encode::bulk(out, argv[1]);
                for &i in idx {
                    encode::bulk(out, names[i as usize]);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_are_redis_bytes() {
        let mut out = BytesMut::new();
        confirmation(&mut out, false, b"subscribe", Some(b"a"), 1);
        assert_eq!(&out[..], b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
        out.clear();
        confirmation(&mut out, true, b"unsubscribe", None, 0);
        assert_eq!(&out[..], b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n");
        out.clear();
        confirmation(&mut out, false, b"unsubscribe", None, 2);
        assert_eq!(&out[..], b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:2\r\n");
    }
}
