//! The subscriber hub: one worker's Pub/Sub subscriptions, multiplexed.
//!
//! Each pool on each worker has one [`Hub`]. It holds at most one subscriber connection per
//! shard (to the node that serves the shard's subscriptions: its primary, or with
//! `pubsub_from: replica` a node picked by the read policy), whatever the number of its
//! subscribing sessions. It counts the local subscribers of each channel, pattern and shard
//! channel ([`Kind`]): the first one sends `SUBSCRIBE` (or `PSUBSCRIBE`, `SSUBSCRIBE`) to the
//! server, the last one to leave sends `UNSUBSCRIBE`. Each message is read once and written
//! to every local subscriber ([`crate::upstream::listener::Listener`]), framed for its protocol (RESP2 array or RESP3
//! push: the same bytes but the first), between two whole replies of that client (a
//! message and a reply travel on different server connections, so a client's own PUBLISH
//! reply and the message it gets from it may come in either order).
//!
//! ```text
//! redis node ──(one connection per shard)──► link task ── parse once ──► Hub.subs[(kind, name)]
//!                                                                          │ every listener
//!                          session output buffer (or its queue, behind replies) ◄─┘
//! ```
//!
//! A subscription is sent one name per command, so a server's refusal (an error instead of
//! the confirmation) names it: the clients that asked for it get that error and hold
//! nothing of their command. Refused for the servers' user's rights (`NOPERM`), the worker
//! drops it and a client told earlier that it holds it (a new connection subscribed it
//! again) is closed; refused for now (`BUSY`), such a client keeps it and it is asked
//! again. Other subscriptions are untouched.
//!
//! Bounds: a listener's held messages (its queue plus its output buffer) count against the
//! pool's `pubsub_output_hard` (over it: that client alone is closed) and
//! `pubsub_output_soft` for `pubsub_output_soft_time`; the link never waits for a listener.
//! A link whose connection breaks, or whose node is switched away from (failover, switchover,
//! health check), opens a connection to the node that serves the shard now and subscribes
//! everything again (counted per shard: `rampart_pubsub_resubscriptions_total`); messages
//! published meanwhile are lost, as Pub/Sub is at-most-once. Each link lists itself in its
//! shard with the node it has everything confirmed on, so that a switchover releases its
//! held writes (PUBLISH among them) only after every link subscribed on the new primary.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use resp::{encode, Value};
use tokio::time::sleep;

use crate::topology::cluster::SlotTable;
use crate::topology::node::NodeRt;
use crate::upstream::dedicated::Dedicated;
use crate::upstream::listener::{Listener, Waiter};
use crate::upstream::pool::WorkerPool;

mod cluster;
mod link;
mod ring;

use link::{run_link, Link};

/// Channels or patterns sent in one `UNSUBSCRIBE` (or `PUNSUBSCRIBE`) command to a server.
const BATCH: usize = 1024;
/// Most subscription changes queued for one link; beyond it they are dropped and the link
/// opens a new connection that subscribes the whole current set instead.
const MAX_OPS: usize = 65_536;
/// First wait before a link tries to connect again after a failed connect; doubles up to
/// [`RETRY_MAX`]. (While the shard has no node, the waiting subscriptions are answered as
/// often.)
const RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest wait between two connects of a link whose connects fail.
const RETRY_MAX: Duration = Duration::from_millis(200);
/// How often a link whose shard has no node to serve it looks again (the resubscription
/// after a failover comes within this of the new primary being known).
const NO_NODE_POLL: Duration = Duration::from_millis(5);
/// How often a connected link checks that its node still serves the shard (a switch also
/// closes its connection at once; this is the fallback).
const RECHECK: Duration = Duration::from_millis(250);

/// What a subscription names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A channel (`SUBSCRIBE`).
    Channel,
    /// A glob pattern (`PSUBSCRIBE`).
    Pattern,
    /// A shard channel (`SSUBSCRIBE`).
    Shard,
}

impl Kind {
    /// The server command that subscribes (`on`) or unsubscribes.
    fn command(self, on: bool) -> &'static [u8] {
        match (self, on) {
            (Kind::Channel, true) => b"SUBSCRIBE",
            (Kind::Channel, false) => b"UNSUBSCRIBE",
            (Kind::Pattern, true) => b"PSUBSCRIBE",
            (Kind::Pattern, false) => b"PUNSUBSCRIBE",
            (Kind::Shard, true) => b"SSUBSCRIBE",
            (Kind::Shard, false) => b"SUNSUBSCRIBE",
        }
    }
}

/// One subscription of the worker, with its local listeners.
struct Entry {
    listeners: Vec<Rc<Listener>>,
    /// Shards it is subscribed on.
    shards: Vec<usize>,
    /// Shards that have not confirmed it yet.
    unconfirmed: Vec<usize>,
    waiters: Vec<Rc<Waiter>>,
    /// A shard channel the server dropped on its own (a cluster node that lost its slot
    /// sends `sunsubscribe`) or refused with a redirection: it is subscribed again where the
    /// slot table places it ([`Hub::follow_slots`]).
    dropped: bool,
}

impl Entry {
    fn settle(&mut self, shard: usize) {
        self.unconfirmed.retain(|&s| s != shard);
        if self.unconfirmed.is_empty() {
            for w in self.waiters.drain(..) {
                w.confirmed();
            }
        }
    }
}

/// One pool's subscriptions on one worker (see the module documentation).
pub struct Hub {
    pool: RefCell<Weak<WorkerPool>>,
    subs: RefCell<HashMap<(Kind, Bytes), Entry>>,
    links: RefCell<Vec<Rc<Link>>>,
    conns: Rc<Dedicated>,
    /// The slot table shard channels were last placed by (a cluster pool); held weakly, so
    /// a new table is told apart by its address without keeping the old one's slots.
    placed_by: RefCell<std::sync::Weak<SlotTable>>,
    /// The ring channels were last placed by (other pools), held weakly in the same way.
    placed_ring: RefCell<std::sync::Weak<hashkit::Continuum>>,
    /// A shard channel was dropped or redirected by its server: place them again even if
    /// the table did not change.
    replace: Cell<bool>,
    /// A task waits for the next slot table (see `Hub::follow_soon`).
    following: Cell<bool>,
    /// In a cluster pool, the shard whose link passes on pattern messages of broadcast
    /// channels (every node hears each `PUBLISH`; the others' copies are dropped).
    home: Cell<Option<usize>>,
    /// Shards whose writes wait until dropped shard channels are subscribed again (see
    /// `Hub::hold_until_resubscribed`).
    holding: RefCell<std::collections::BTreeSet<usize>>,
    /// The slot table in effect when a node last dropped a shard channel, and when: a
    /// dropped channel is placed again by a newer table, or after the pool timeout.
    dropped_under: RefCell<std::sync::Weak<SlotTable>>,
    dropped_at: Cell<Option<std::time::Instant>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            pool: RefCell::new(Weak::new()),
            subs: RefCell::default(),
            links: RefCell::default(),
            conns: Rc::default(),
            placed_by: RefCell::new(std::sync::Weak::new()),
            placed_ring: RefCell::new(std::sync::Weak::new()),
            replace: Cell::new(false),
            following: Cell::new(false),
            home: Cell::new(None),
            holding: RefCell::default(),
            dropped_under: RefCell::new(std::sync::Weak::new()),
            dropped_at: Cell::new(None),
        }
    }
}

/// Where a channel or pattern is subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On one shard (a channel, as a key of the same name would be).
    One(usize),
    /// On every shard (patterns, keyevent channels).
    All,
}

/// Where `name` of `kind` lives in a pool of `shards` shards, `shard_for` placing a key:
/// a channel (or shard channel) on the shard of the key of the same name (hash tags
/// honoured), a keyspace notification channel `__keyspace@<db>__:<key>` on the shard of
/// `<key>`, a keyevent channel `__keyevent@<db>__:<event>` and every pattern on every shard.
/// `None` when no shard can take it.
pub fn placement(
    kind: Kind,
    name: &[u8],
    shard_for: impl Fn(&[u8]) -> Option<usize>,
) -> Option<Placement> {
    if kind == Kind::Pattern || notification(name, b"__keyevent@").is_some() {
        return Some(Placement::All);
    }
    let key = notification(name, b"__keyspace@").unwrap_or(name);
    shard_for(key).map(Placement::One)
}

/// The part after `__<prefix><db>__:` of a notification channel name.
fn notification<'a>(name: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let rest = name.strip_prefix(prefix)?;
    let end = memchr::memmem::find(rest, b"__:")?;
    rest[..end]
        .iter()
        .all(u8::is_ascii_digit)
        .then(|| &rest[end + 3..])
}

impl Hub {
    /// Follow the worker's current view of the pool (after a reload too).
    pub fn adopt(&self, pool: Weak<WorkerPool>) {
        *self.pool.borrow_mut() = pool;
    }

    /// Subscriptions (channels, patterns, shard channels) held on this worker.
    pub fn len(&self) -> usize {
        self.subs.borrow().len()
    }

    /// No subscription is held.
    pub fn is_empty(&self) -> bool {
        self.subs.borrow().is_empty()
    }

    /// Subscriber connections this worker holds open for the pool.
    pub fn connections(&self) -> usize {
        self.conns.open()
    }

    fn link(&self, shard: usize) -> Rc<Link> {
        let mut links = self.links.borrow_mut();
        while links.len() <= shard {
            links.push(Rc::new(Link::new()));
        }
        Rc::clone(&links[shard])
    }

    /// Add `listener` to the subscription `(kind, name)` placed at `at`. If the worker did
    /// not hold it yet, it is subscribed on the server(s) and `waiter` counts it until
    /// every server confirmed it.
    pub fn subscribe(
        self: &Rc<Self>,
        listener: &Rc<Listener>,
        (kind, name): (Kind, &[u8]),
        at: &Placement,
        shards: usize,
        waiter: &Rc<Waiter>,
    ) {
        let mut subs = self.subs.borrow_mut();
        let key = (kind, Bytes::copy_from_slice(name));
        if let Some(e) = subs.get_mut(&key) {
            if !e.listeners.iter().any(|l| Rc::ptr_eq(l, listener)) {
                e.listeners.push(Rc::clone(listener));
            }
            if !e.unconfirmed.is_empty() {
                waiter.left.set(waiter.left.get() + 1);
                e.waiters.push(Rc::clone(waiter));
            }
            return;
        }
        let on: Vec<usize> = match at {
            Placement::One(s) => vec![*s],
            Placement::All => (0..shards).collect(),
        };
        for &s in &on {
            let link = self.link(s);
            link.keys.set(link.keys.get() + 1);
            link.push(kind, key.1.clone(), true);
            if !link.running.replace(true) {
                tokio::task::spawn_local(run_link(Rc::downgrade(self), link, s));
            }
        }
        waiter.left.set(waiter.left.get() + 1);
        subs.insert(
            key,
            Entry {
                listeners: vec![Rc::clone(listener)],
                unconfirmed: on.clone(),
                shards: on,
                waiters: vec![Rc::clone(waiter)],
                dropped: false,
            },
        );
    }

    /// Remove `listener` from the subscription `(kind, name)`; the last one to leave
    /// unsubscribes the worker on the server(s).
    pub fn unsubscribe(&self, listener: &Rc<Listener>, kind: Kind, name: &[u8]) {
        let mut subs = self.subs.borrow_mut();
        let Some(e) = subs.get_mut(&(kind, Bytes::copy_from_slice(name))) else {
            return;
        };
        e.listeners.retain(|l| !Rc::ptr_eq(l, listener));
        if !e.listeners.is_empty() {
            return;
        }
        let key = (kind, Bytes::copy_from_slice(name));
        if let Some(mut e) = subs.remove(&key) {
            for &s in &e.shards {
                let link = self.link(s);
                link.keys.set(link.keys.get().saturating_sub(1));
                link.push(kind, key.1.clone(), false);
            }
            e.unconfirmed.clear();
            for w in e.waiters.drain(..) {
                w.confirmed();
            }
        }
    }

    /// The node that serves `shard`'s subscriptions now, if any. Writes held by a
    /// switchover or a failover do not move subscriptions: a subscription is no write, and
    /// a switchover releases its held writes (PUBLISH among them) once the links subscribed
    /// on the new primary (`ha::switchover`).
    fn target(&self, shard: usize) -> Option<(Arc<crate::topology::PoolRt>, Arc<NodeRt>)> {
        let wp = self.pool.borrow().upgrade()?;
        let s = wp.rt.shards.get(shard)?;
        let view = s.view();
        let node = match wp.rt.conf.pubsub.from {
            rampart_config::PubSubFrom::Primary => view.writable_primary().cloned(),
            rampart_config::PubSubFrom::Replica => {
                crate::upstream::route::pick_read(&wp, shard, &view, None)
            }
        }?;
        Some((Arc::clone(&wp.rt), node))
    }

    /// Every subscription on `shard`, as commands for a new connection; clears the link's
    /// queued changes (the set sent replaces them).
    fn everything_on(&self, shard: usize, link: &Link) -> BytesMut {
        link.ops.borrow_mut().clear();
        let mut subs = self.subs.borrow_mut();
        for ((_, _), e) in subs.iter_mut() {
            if e.shards.contains(&shard) {
                e.dropped = false;
            }
        }
        let mut out = BytesMut::new();
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            let names: Vec<&[u8]> = subs
                .iter()
                .filter(|((k, _), e)| *k == kind && e.shards.contains(&shard))
                .map(|((_, n), _)| n.as_ref())
                .collect();
            let mut asked = link.asked.borrow_mut();
            for chunk in names.chunks(batch(kind, true)) {
                encode_command(&mut out, kind.command(true), chunk);
                asked.extend(chunk.iter().map(|n| (kind, Bytes::copy_from_slice(n))));
            }
            link.expect(names.len());
        }
        out
    }

    /// Nothing will confirm the subscriptions awaited on `shard` (no node, or its
    /// connection failed): their replies go now; the link subscribes them when it connects.
    fn settle_shard(&self, shard: usize) {
        for e in self.subs.borrow_mut().values_mut() {
            if e.unconfirmed.contains(&shard) {
                e.settle(shard);
            }
        }
    }

    /// `shard`'s server refused the subscription `asked` with `error` (a whole error
    /// frame): its waiting clients get the error, as from Redis directly. Refused for the
    /// servers' user's rights (`NOPERM`), it is dropped from the worker and a client that
    /// holds it already (subscribed again on a new connection) is closed; refused for
    /// another reason (`BUSY` while a script runs), the clients that hold it keep it and it
    /// is asked again after [`RETRY_MAX`].
    fn refused(self: &Rc<Self>, shard: usize, asked: Option<(Kind, Bytes)>, error: &[u8]) {
        // Any client can cause this line (a channel the servers' user may not use).
        static LINES: crate::observe::loglines::Lines = crate::observe::loglines::Lines::new();
        if let Some(left_out) = LINES.admit() {
            let more = crate::observe::loglines::more(left_out, "refusals");
            let text = String::from_utf8_lossy(&error[1..error.len().min(200)]);
            let name = asked
                .as_ref()
                .map(|(_, n)| String::from_utf8_lossy(&n[..n.len().min(200)]).into_owned());
            tracing::warn!(
                shard,
                "pub/sub: server refused {}: {}{more}",
                name.as_deref().unwrap_or("a subscription"),
                text.trim_end()
            );
        }
        let Some((kind, name)) = asked else {
            // Not known which: what waits on the shard is answered.
            return self.settle_shard(shard);
        };
        if !error.starts_with(b"-NOPERM") {
            return self.refused_for_now(shard, (kind, name), error);
        }
        let Some(mut e) = self.subs.borrow_mut().remove(&(kind, name.clone())) else {
            return;
        };
        self.leave_links(&e.shards, kind, &name, shard);
        for l in &e.listeners {
            if !e.waiters.iter().any(|w| Rc::ptr_eq(&w.listener, l)) {
                l.lose();
            }
        }
        for w in e.waiters.drain(..) {
            w.refuse(error);
        }
    }

    /// A subscription refused by `refused_on`'s server and dropped from the worker leaves
    /// the links of `shards`: unsubscribed on the others; `refused_on`'s server holds nothing
    /// of it, and its link is woken to go on.
    fn leave_links(&self, shards: &[usize], kind: Kind, name: &Bytes, refused_on: usize) {
        for &s in shards {
            let link = self.link(s);
            link.keys.set(link.keys.get().saturating_sub(1));
            if s == refused_on {
                link.wake.notify();
            } else {
                link.push(kind, name.clone(), false);
            }
        }
    }

    /// See [`Hub::refused`]: a refusal that may not last.
    fn refused_for_now(self: &Rc<Self>, shard: usize, key: (Kind, Bytes), error: &[u8]) {
        let mut subs = self.subs.borrow_mut();
        let Some(e) = subs.get_mut(&key) else {
            return;
        };
        e.unconfirmed.retain(|&s| s != shard);
        // The clients that asked hold nothing of it (their sessions take it back).
        let waiters: Vec<Rc<Waiter>> = e.waiters.drain(..).collect();
        e.listeners
            .retain(|l| !waiters.iter().any(|w| Rc::ptr_eq(&w.listener, l)));
        let held = !e.listeners.is_empty();
        if !held {
            // Nobody else: left everywhere, so a later subscriber asks the server anew.
            if let Some(e) = subs.remove(&key) {
                self.leave_links(&e.shards, key.0, &key.1, shard);
            }
        }
        drop(subs);
        for w in waiters {
            w.refuse(error);
        }
        if !held {
            return;
        }
        let hub = Rc::downgrade(self);
        tokio::task::spawn_local(async move {
            sleep(RETRY_MAX).await;
            let Some(h) = hub.upgrade() else { return };
            let placed = h
                .subs
                .borrow()
                .get(&key)
                .is_some_and(|e| e.shards.contains(&shard));
            if placed {
                h.link(shard).push(key.0, key.1, true);
            }
        });
    }

    /// A frame read from `shard`'s subscriber connection.
    fn on_frame(self: &Rc<Self>, shard: usize, frame: Vec<u8>) {
        let Ok(Value::Array(Some(items))) = resp::peek(&frame) else {
            if frame.first() == Some(&b'-') {
                // The answer to one name: every subscribe command carries one.
                let link = self.links.borrow().get(shard).cloned();
                let asked = link.and_then(|l| {
                    l.confirmed();
                    l.asked.borrow_mut().pop_front()
                });
                let text = String::from_utf8_lossy(&frame[1..frame.len().min(200)]);
                if crate::upstream::backend::is_redirect(&frame) {
                    tracing::debug!(shard, "pub/sub: redirected: {}", text.trim_end());
                    self.redirected(shard, &text);
                    self.settle_shard(shard);
                } else {
                    self.refused(shard, asked, &frame);
                }
            }
            return;
        };
        let bulk = |i: usize| match items.get(i).map(|b| resp::peek(b)) {
            Some(Ok(Value::Bulk(Some(b)))) => Some(b),
            _ => None,
        };
        let (Some(what), Some(name)) = (bulk(0), bulk(1)) else {
            return;
        };
        let kind = match what {
            b"message" | b"subscribe" | b"unsubscribe" => Kind::Channel,
            b"pmessage" | b"psubscribe" | b"punsubscribe" => Kind::Pattern,
            b"smessage" | b"ssubscribe" | b"sunsubscribe" => Kind::Shard,
            _ => return,
        };
        let key = (kind, Bytes::copy_from_slice(name));
        let link = self.links.borrow().get(shard).cloned();
        if what == b"sunsubscribe" && !link.as_ref().is_some_and(|l| l.left(name)) {
            // Not an answer: a cluster node that lost the slot drops its shard channels
            // and says so. Subscribed again where the map (asked for now) places it.
            if let Some(e) = self.subs.borrow_mut().get_mut(&key) {
                if e.shards.contains(&shard) {
                    e.dropped = true;
                    self.note_dropped();
                    self.replace.set(true);
                    self.ask_refresh();
                    self.hold_until_resubscribed(shard);
                    self.follow_soon();
                }
            }
            return;
        }
        // Every name of a (un)subscribe command sent is confirmed once: an unsubscribe
        // counts too, or the link would think the server stuck and start again.
        if what.ends_with(b"subscribe") {
            if let Some(l) = &link {
                l.confirmed();
            }
        }
        if what.ends_with(b"unsubscribe") {
            return;
        }
        if what.ends_with(b"subscribe") {
            if let Some(l) = &link {
                l.asked.borrow_mut().pop_front();
            }
            if let Some(e) = self.subs.borrow_mut().get_mut(&key) {
                e.settle(shard);
            }
            return;
        }
        if what == b"pmessage" && !self.passes_pmessage(shard, bulk(2).unwrap_or_default()) {
            return;
        }
        let subs = self.subs.borrow();
        let Some(e) = subs.get(&key) else {
            return;
        };
        let resp2 = Bytes::from(frame);
        let resp3 = if e.listeners.iter().any(|l| l.resp3.get()) {
            let mut b = BytesMut::from(&resp2[..]);
            b[0] = b'>';
            b.freeze()
        } else {
            resp2.clone()
        };
        for l in &e.listeners {
            if !l.refuses(kind, &key.1) {
                l.offer(&resp2, &resp3);
            }
        }
    }

    /// The changes queued for `shard`'s link, as commands (one per run of equal kind and
    /// direction, at most [`BATCH`] names each).
    fn changes(&self, link: &Link) -> BytesMut {
        let ops: Vec<(Kind, Bytes, bool)> = link.ops.borrow_mut().drain(..).collect();
        let mut out = BytesMut::new();
        let mut i = 0;
        while i < ops.len() {
            let (kind, _, on) = ops[i];
            let mut j = i;
            while j < ops.len() && j - i < batch(kind, on) && ops[j].0 == kind && ops[j].2 == on {
                j += 1;
            }
            let names: Vec<&[u8]> = ops[i..j].iter().map(|o| o.1.as_ref()).collect();
            encode_command(&mut out, kind.command(on), &names);
            link.expect(names.len());
            if on {
                let mut asked = link.asked.borrow_mut();
                asked.extend(ops[i..j].iter().map(|o| (kind, o.1.clone())));
            }
            if kind == Kind::Shard && !on {
                let mut leaving = link.leaving.borrow_mut();
                for o in &ops[i..j] {
                    *leaving.entry(o.1.clone()).or_default() += 1;
                }
            }
            i = j;
        }
        out
    }
}

/// Most names one (un)subscribe (`on`) command carries: one for a subscribe, so that a
/// refusal names its subscription (and a Redis Cluster node refuses SSUBSCRIBE of channels
/// in different slots), and for a shard channel's `SUNSUBSCRIBE`; [`BATCH`] otherwise.
fn batch(kind: Kind, on: bool) -> usize {
    match (kind, on) {
        (Kind::Shard, _) | (_, true) => 1,
        _ => BATCH,
    }
}

fn encode_command(out: &mut BytesMut, cmd: &[u8], names: &[&[u8]]) {
    encode::array_header(out, names.len() + 1);
    encode::bulk(out, cmd);
    for n in names {
        encode::bulk(out, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_len(key: &[u8]) -> Option<usize> {
        Some(key.len() % 3)
    }

    #[test]
    fn a_sunsubscribe_is_an_answer_only_for_one_the_link_sent() {
        let link = Link::default();
        link.push(Kind::Shard, Bytes::from_static(b"a"), false);
        link.push(Kind::Shard, Bytes::from_static(b"a"), true);
        link.push(Kind::Shard, Bytes::from_static(b"a"), false);
        let hub = Hub::default();
        let out = hub.changes(&link);
        assert_eq!(
            &out[..],
            &b"*2\r\n$12\r\nSUNSUBSCRIBE\r\n$1\r\na\r\n*2\r\n$10\r\nSSUBSCRIBE\r\n$1\r\na\r\n*2\r\n$12\r\nSUNSUBSCRIBE\r\n$1\r\na\r\n"[..]
        );
        // Two sent, two answers; a third is the server's own.
        assert!(link.left(b"a"));
        assert!(link.left(b"a"));
        assert!(!link.left(b"a"));
        assert!(!link.left(b"b"));
        // A new connection owes nothing.
        link.push(Kind::Shard, Bytes::from_static(b"b"), false);
        hub.changes(&link);
        link.reset();
        assert!(!link.left(b"b"));
    }

    #[test]
    fn channels_are_placed_like_keys_and_notifications_follow_their_key() {
        assert_eq!(
            placement(Kind::Channel, b"abcd", by_len),
            Some(Placement::One(1))
        );
        assert_eq!(
            placement(Kind::Shard, b"abcde", by_len),
            Some(Placement::One(2))
        );
        assert_eq!(
            placement(Kind::Channel, b"__keyspace@0__:ab", by_len),
            Some(Placement::One(2))
        );
        assert_eq!(
            placement(Kind::Channel, b"__keyevent@12__:set", by_len),
            Some(Placement::All)
        );
        assert_eq!(placement(Kind::Pattern, b"x", by_len), Some(Placement::All));
        // Not a notification channel: placed by its whole name.
        assert_eq!(
            placement(Kind::Channel, b"__keyspace@x__:ab", by_len),
            Some(Placement::One(17 % 3))
        );
    }
}
