//! Commands about the client connection itself, answered by rampart for its own clients in
//! Redis' formats: `CLIENT LIST`, `CLIENT INFO`, `CLIENT KILL`, `CLIENT REPLY`,
//! `CLIENT NO-EVICT`, `CLIENT NO-TOUCH`, `CLIENT PAUSE`, `CLIENT UNPAUSE`, `CLIENT UNBLOCK`,
//! `TIME` and `MONITOR`.
//!
//! `CLIENT LIST` and `CLIENT KILL` see the sessions of the caller's pool on every worker
//! (through [`crate::observe::clients`]); `CLIENT PAUSE` holds that pool's sessions
//! ([`crate::session::pause`]). `CLIENT KILL`, `CLIENT PAUSE`, `CLIENT UNPAUSE`,
//! `CLIENT UNBLOCK` and `MONITOR` are accepted, in a pool without users, only from clients on loopback or a unix socket
//! ([`NOPERM`] otherwise); in a pool with users, the user's rules decide (they are `@admin`
//! commands, so `+@admin` allows them).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use resp::encode;

use crate::observe::clients::{self, flag_letters, Seen, FLAG_MONITOR};
use crate::session::local::{Answer, Local};
use crate::session::pause;
use crate::text::sanitize;

/// The reply to an operator command from a client that is not on loopback or a unix socket.
pub const NOPERM: &str = "NOPERM rampart: CLIENT KILL, CLIENT PAUSE, CLIENT UNPAUSE, CLIENT UNBLOCK and MONITOR are accepted only from clients on loopback or a unix socket";

/// Answer `CLIENT <sub> ...` for the subcommands of this module; `None` for the others.
pub fn client(ctx: &mut Local<'_>, sub: &[u8], argv: &[&[u8]], out: &mut BytesMut) -> Option<()> {
    match sub {
        b"list" => list(ctx, argv, out),
        b"info" if argv.len() == 2 => {
            let me = ctx.client.entry.as_ref().map(|e| e.seen());
            let mut line = String::new();
            if let Some(s) = me {
                write_line(&mut line, &s);
            }
            encode::text_for(out, ctx.client.resp3, line.as_bytes());
        }
        b"kill" => kill(ctx, argv, out),
        b"reply" if argv.len() == 3 => reply(ctx, argv[2], out),
        b"no-evict" | b"no-touch" if argv.len() == 3 => {
            if on_off(argv[2]).is_some() {
                encode::simple(out, b"OK");
            } else {
                encode::error(out, "ERR syntax error");
            }
        }
        b"pause" if argv.len() == 3 || argv.len() == 4 => client_pause(ctx, argv, out),
        b"unpause" if argv.len() == 2 => {
            if !ctx.client.may_operate() {
                encode::error(out, NOPERM);
            } else {
                pause::unpause(ctx.pool.index);
                encode::simple(out, b"OK");
            }
        }
        b"info" | b"reply" | b"no-evict" | b"no-touch" | b"pause" | b"unpause" => encode::error(
            out,
            &format!(
                "ERR wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(sub)
            ),
        ),
        _ => return None,
    }
    Some(())
}

/// How often `CLIENT UNBLOCK` looks again for a target whose blocking command is still being
/// sent (its connection opening).
const UNBLOCK_POLL: Duration = Duration::from_millis(1);

/// `CLIENT UNBLOCK client-id [TIMEOUT|ERROR]` (Redis 7.0 `CLIENT UNBLOCK`): `:1` when the
/// session `client-id` of the caller's pool was blocked in a command and is unblocked, else
/// `:0`, or an error saying why a blocked client could not be reached (the server refused
/// CLIENT UNBLOCK to the pool's backend user, or its connection has no id). rampart asks the
/// server the command waits on (`CLIENT UNBLOCK` there, with the server's id for that
/// dedicated connection), so the blocked client gets what Redis gives:
/// the command's timeout reply (TIMEOUT, the default) or `-UNBLOCKED client unblocked via
/// CLIENT UNBLOCK` (ERROR); a command that got its data first keeps it and the answer is 0.
/// A target still waiting for its connection (the shard's writes held in a failover, its
/// spool replaying) ends that wait with the same reply, nothing sent. A target opening its
/// connection is waited for, at most the pool `timeout`. The call to the server is not
/// refused when the blocked clients hold every one of the pool's `max_dedicated_connections`
/// (see `Dedicated::spare`).
pub fn unblock(ctx: &mut Local<'_>, argv: &[&[u8]]) -> Answer {
    let mut out = BytesMut::new();
    if !ctx.client.may_operate() {
        encode::error(&mut out, NOPERM);
        return Answer::Reply(out);
    }
    if argv.len() > 4 {
        encode::error(
            &mut out,
            "ERR unknown subcommand or wrong number of arguments for 'unblock'. Try CLIENT HELP.",
        );
        return Answer::Reply(out);
    }
    let Some(id) = std::str::from_utf8(argv[2])
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    else {
        encode::error(&mut out, "ERR value is not an integer or out of range");
        return Answer::Reply(out);
    };
    let (mode, early): (&[u8], u8) = match argv.get(3) {
        None => (b"TIMEOUT", clients::EARLY_TIMEOUT),
        Some(m) if m.eq_ignore_ascii_case(b"timeout") => (b"TIMEOUT", clients::EARLY_TIMEOUT),
        Some(m) if m.eq_ignore_ascii_case(b"error") => (b"ERROR", clients::EARLY_ERROR),
        Some(_) => {
            encode::error(
                &mut out,
                "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            );
            return Answer::Reply(out);
        }
    };
    let target = u64::try_from(id)
        .ok()
        .and_then(clients::get)
        .filter(|e| e.pool == ctx.pool.conf.name && e.is_blocked());
    let Some(target) = target else {
        encode::integer(&mut out, 0);
        return Answer::Reply(out);
    };
    let seq = ctx.pending.push_waiting();
    let pending = std::rc::Rc::clone(ctx.pending);
    let pool = std::sync::Arc::clone(ctx.pool);
    let dedicated = std::rc::Rc::clone(&ctx.routes.dedicated);
    tokio::task::spawn_local(async move {
        let until = tokio::time::Instant::now() + pool.timeout();
        let on = loop {
            // Still waiting for its connection (the shard's writes held, its spool
            // replaying): that wait ends now, nothing sent.
            if target.unblock_early(early) {
                let mut out = BytesMut::new();
                encode::integer(&mut out, 1);
                pending.deliver(seq, 0, &out);
                return;
            }
            let on = target.blocked_on();
            if !on.is_empty() || !target.is_blocked() || tokio::time::Instant::now() >= until {
                break on;
            }
            tokio::time::sleep(UNBLOCK_POLL).await;
        };
        let mut unblocked = 0;
        // Why the blocked client could not be reached, said instead of a bare 0.
        let mut refused = (on.is_empty() && target.is_blocked()).then(|| {
            format!(
                "ERR rampart: client {id} waits on a server connection without an id (the \
                 pool's backend user may not run CLIENT ID, or the connection is still \
                 opening), so CLIENT UNBLOCK cannot reach it"
            )
        });
        for (node, server_id) in on {
            let Some(node) = pool
                .shards
                .iter()
                .find_map(|s| s.view().nodes.iter().find(|n| n.id == node).cloned())
            else {
                continue;
            };
            // Not refused when the blocked clients hold every dedicated connection.
            let Some(mut lease) = dedicated.spare(&pool, &node, until).await else {
                continue;
            };
            let mut req = BytesMut::new();
            encode::command(
                &mut req,
                &[
                    b"CLIENT",
                    b"UNBLOCK",
                    server_id.to_string().as_bytes(),
                    mode,
                ],
            );
            if let Ok(r) = lease.call(&req, Some(until)).await {
                if r == b":1\r\n" {
                    unblocked = 1;
                } else if let Some(e) = r.strip_prefix(b"-") {
                    // The server refused it (the backend user without `client|unblock`).
                    let e = String::from_utf8_lossy(e);
                    refused = Some(format!(
                        "ERR rampart: server {} refused CLIENT UNBLOCK: {}",
                        node.label,
                        e.trim_end()
                    ));
                }
                lease.done();
            }
        }
        let mut out = BytesMut::new();
        match refused {
            Some(why) if unblocked == 0 => encode::error(&mut out, &why),
            _ => encode::integer(&mut out, unblocked),
        }
        pending.deliver(seq, 0, &out);
    });
    Answer::Later
}

/// `TIME`: rampart's clock, `[seconds, microseconds]` as two bulk strings.
pub fn time(out: &mut BytesMut) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    encode::array_header(out, 2);
    encode::bulk(out, now.as_secs().to_string().as_bytes());
    encode::bulk(out, now.subsec_micros().to_string().as_bytes());
}

/// `MONITOR`: `+OK`, then every command passing through rampart (see
/// [`crate::observe::monitor`]). A session that monitors already gets no reply, as in Redis.
pub fn monitor(ctx: &mut Local<'_>, out: &mut BytesMut) {
    if !ctx.client.may_operate() {
        return encode::error(out, NOPERM);
    }
    if ctx.client.monitoring {
        return;
    }
    ctx.client.monitoring = true;
    ctx.client.monitor = Some(crate::observe::monitor::subscribe(&ctx.pool.conf.name));
    if let Some(e) = &ctx.client.entry {
        e.set_flag(FLAG_MONITOR, true);
    }
    encode::simple(out, b"OK");
}

fn on_off(v: &[u8]) -> Option<bool> {
    if v.eq_ignore_ascii_case(b"on") {
        Some(true)
    } else if v.eq_ignore_ascii_case(b"off") {
        Some(false)
    } else {
        None
    }
}

/// One `CLIENT LIST` line with Redis 7's fields (those rampart has no value for are 0, -1 or
/// empty as for an idle Redis client) and rampart's `pool=` last.
fn write_line(t: &mut String, s: &Seen) {
    let e = &s.entry;
    let mut flags = flag_letters(s.flags);
    if e.addr.starts_with('/') {
        if flags == "N" {
            flags.clear();
        }
        flags.push('U');
    }
    let multi = if s.flags & clients::FLAG_MULTI != 0 {
        0
    } else {
        -1
    };
    let [sub, psub, ssub] = e.subscriptions();
    let _ = writeln!(
        t,
        "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db=0 sub={sub} psub={psub} ssub={ssub} multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={} pool={}",
        e.id,
        e.addr,
        e.laddr,
        String::from_utf8_lossy(&s.name),
        s.age,
        s.idle,
        flags,
        multi,
        s.cmd,
        e.user(),
        if s.flags & clients::FLAG_RESP3 != 0 { 3 } else { 2 },
        e.pool,
    );
}

fn parse_i64(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A client's type as `CLIENT LIST TYPE` and `CLIENT KILL TYPE` name it: a session that
/// holds subscriptions is `pubsub`, any other `normal` (a MONITOR too, as in Redis); rampart's
/// clients are never `master` or `replica`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientType {
    Normal,
    PubSub,
    Replication,
}

impl ClientType {
    /// Redis' type names; `None` for an unknown one.
    fn parse(v: &[u8]) -> Option<ClientType> {
        match &v.to_ascii_lowercase()[..] {
            b"normal" => Some(ClientType::Normal),
            b"pubsub" => Some(ClientType::PubSub),
            b"master" | b"replica" | b"slave" => Some(ClientType::Replication),
            _ => None,
        }
    }

    /// Whether the session with `FLAG_*` bits `flags` is of this type.
    fn matches(self, flags: u8) -> bool {
        let pubsub = flags & clients::FLAG_PUBSUB != 0;
        match self {
            ClientType::Normal => !pubsub,
            ClientType::PubSub => pubsub,
            ClientType::Replication => false,
        }
    }
}

/// `CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...]`: the sessions of the
/// caller's pool.
fn list(ctx: &Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    let mut ids: Option<Vec<u64>> = None;
    let mut kind = None;
    match argv.get(2).map(|a| a.to_ascii_lowercase()).as_deref() {
        None => {}
        Some(b"type") if argv.len() == 4 => match ClientType::parse(argv[3]) {
            Some(t) => kind = Some(t),
            None => {
                return encode::error(
                    out,
                    &format!("ERR Unknown client type '{}'", sanitize(argv[3], 64)),
                )
            }
        },
        Some(b"id") if argv.len() >= 4 => {
            let mut v = Vec::with_capacity(argv.len() - 3);
            for a in &argv[3..] {
                match parse_i64(a) {
                    Some(id) if id > 0 => v.push(id as u64),
                    _ => return encode::error(out, "ERR Invalid client ID"),
                }
            }
            ids = Some(v);
        }
        Some(_) => return encode::error(out, "ERR syntax error"),
    }
    let mut t = String::new();
    for e in clients::all() {
        if e.pool != ctx.pool.conf.name {
            continue;
        }
        if ids.as_ref().is_some_and(|ids| !ids.contains(&e.id)) {
            continue;
        }
        let seen = e.seen();
        if kind.is_some_and(|k| !k.matches(seen.flags)) {
            continue;
        }
        write_line(&mut t, &seen);
    }
    // A verbatim string (`=...txt:`) to a RESP3 client, as Redis sends it.
    encode::text_for(out, ctx.client.resp3, t.as_bytes());
}

/// What one `CLIENT KILL` call matches.
#[derive(Default)]
struct Filter {
    id: Option<u64>,
    addr: Option<Vec<u8>>,
    laddr: Option<Vec<u8>>,
    max_age: Option<u64>,
    /// `USER`: the user the client is at the proxy.
    user: Option<Vec<u8>>,
    /// `TYPE`.
    kind: Option<ClientType>,
    skip_me: bool,
}

/// `CLIENT KILL addr:port` (the old form: `OK` or `ERR No such client`) and
/// `CLIENT KILL <filter> <value> ...` with `ID`, `ADDR`, `LADDR`, `USER`, `TYPE`, `SKIPME`
/// and `MAXAGE` (the number of clients killed). Only the sessions of the caller's pool.
fn kill(ctx: &mut Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    if !ctx.client.may_operate() {
        return encode::error(out, NOPERM);
    }
    if argv.len() == 3 {
        let f = Filter {
            addr: Some(argv[2].to_vec()),
            ..Filter::default()
        };
        return match kill_matching(ctx, &f) {
            0 => encode::error(out, "ERR No such client"),
            _ => encode::simple(out, b"OK"),
        };
    }
    if argv.len() < 4 || !argv.len().is_multiple_of(2) {
        return encode::error(out, "ERR syntax error");
    }
    let mut f = Filter {
        skip_me: true,
        ..Filter::default()
    };
    for pair in argv[2..].chunks(2) {
        let (opt, v) = (pair[0].to_ascii_lowercase(), pair[1]);
        match &opt[..] {
            b"id" => match parse_i64(v) {
                Some(id) if id > 0 => f.id = Some(id as u64),
                _ => return encode::error(out, "ERR client-id should be greater than 0"),
            },
            b"type" => match ClientType::parse(v) {
                Some(t) => f.kind = Some(t),
                None => {
                    return encode::error(
                        out,
                        &format!("ERR Unknown client type '{}'", sanitize(v, 64)),
                    )
                }
            },
            b"user" if ctx.pool.conf.users.iter().any(|u| u.name.as_bytes() == v) => {
                f.user = Some(v.to_vec())
            }
            b"user" if ctx.pool.conf.users.is_empty() && v == b"default" => {}
            b"user" => {
                return encode::error(out, &format!("ERR No such user '{}'", sanitize(v, 64)))
            }
            b"addr" => f.addr = Some(v.to_vec()),
            b"laddr" => f.laddr = Some(v.to_vec()),
            b"skipme" => match &v.to_ascii_lowercase()[..] {
                b"yes" => f.skip_me = true,
                b"no" => f.skip_me = false,
                _ => return encode::error(out, "ERR syntax error"),
            },
            b"maxage" => match parse_i64(v) {
                Some(age) if age >= 0 => f.max_age = Some(age as u64),
                _ => return encode::error(out, "ERR value is not an integer or out of range"),
            },
            _ => return encode::error(out, "ERR syntax error"),
        }
    }
    encode::integer(out, kill_matching(ctx, &f) as i64);
}

/// Kill every session of the caller's pool that `f` matches; the caller's own session is
/// closed after this reply instead. Returns how many matched.
fn kill_matching(ctx: &mut Local<'_>, f: &Filter) -> usize {
    let me = ctx.client.id;
    let mut n = 0;
    for e in clients::all() {
        if e.pool != ctx.pool.conf.name
            || f.id.is_some_and(|id| id != e.id)
            || f.addr.as_deref().is_some_and(|a| a != e.addr.as_bytes())
            || f.laddr.as_deref().is_some_and(|a| a != e.laddr.as_bytes())
            || f.max_age.is_some_and(|age| e.age() <= age)
            || f.user.as_deref().is_some_and(|u| u != e.user().as_bytes())
            || f.kind.is_some_and(|k| !k.matches(e.flags()))
            || (f.skip_me && e.id == me)
        {
            continue;
        }
        n += 1;
        if e.id == me {
            ctx.client.closing = true;
        } else {
            e.kill();
        }
    }
    n
}

/// `CLIENT REPLY ON|OFF|SKIP`: OFF drops every reply from this one on, SKIP the next
/// command's; ON replies `OK`. The session mutes a reply in its reply queue, so replies of
/// requests sent before keep their order.
fn reply(ctx: &mut Local<'_>, v: &[u8], out: &mut BytesMut) {
    match &v.to_ascii_lowercase()[..] {
        b"on" => {
            ctx.client.reply_off = false;
            ctx.client.skip_next = false;
            ctx.pending.unmute();
            encode::simple(out, b"OK");
        }
        b"off" => ctx.client.reply_off = true,
        b"skip" => ctx.client.skip_next = true,
        _ => encode::error(out, "ERR syntax error"),
    }
}

/// `CLIENT PAUSE <milliseconds> [WRITE|ALL]`.
fn client_pause(ctx: &mut Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    if !ctx.client.may_operate() {
        return encode::error(out, NOPERM);
    }
    let ms = match parse_i64(argv[2]) {
        None => return encode::error(out, "ERR timeout is not an integer or out of range"),
        Some(ms) if ms < 0 => return encode::error(out, "ERR timeout is negative"),
        Some(ms) => ms as u64,
    };
    let all = match argv.get(3).map(|m| m.to_ascii_lowercase()).as_deref() {
        None | Some(b"all") => true,
        Some(b"write") => false,
        Some(_) => return encode::error(out, "ERR CLIENT PAUSE mode must be WRITE or ALL"),
    };
    pause::pause(ctx.pool.index, Duration::from_millis(ms), all);
    encode::simple(out, b"OK");
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::sync::Arc;

    use super::*;
    use crate::reply::pending::Pending;
    use crate::session::local::ClientState;
    use crate::topology::{PoolRt, Shared};
    use crate::upstream::pool::WorkerPool;

    /// Run `argv` (a CLIENT subcommand, or MONITOR) as a client that is `local` or not.
    fn run(argv: &[&[u8]], local: bool) -> (Vec<u8>, ClientState) {
        let conf = rampart_config::parse(
            "p:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:2:1 s0\n",
            "test",
        )
        .expect("test config parses");
        let pool = Arc::new(PoolRt::new(
            60,
            conf.pools.into_iter().next().expect("a pool"),
            1,
        ));
        let shared = Shared::new(1, None, tokio_util::sync::CancellationToken::new());
        let routes = WorkerPool::new(Arc::clone(&pool), 0, shared.metrics.worker(0));
        let pending = Rc::new(Pending::default());
        let mut client = ClientState {
            id: 1,
            authed: true,
            name: None,
            closing: false,
            local,
            addr: "10.0.0.1:5000".into(),
            resp3: false,
            entry: None,
            reply_off: false,
            skip_next: false,
            monitoring: false,
            monitor: None,
            held: None,
            user: None,
            auth_held: None,
            auth_waited: false,
        };
        let mut l = Local {
            client: &mut client,
            pool: &pool,
            routes: &routes,
            shared: &shared,
            pending: &pending,
        };
        let mut out = BytesMut::new();
        if argv[0] == b"MONITOR" {
            monitor(&mut l, &mut out);
        } else {
            let sub = argv[1].to_ascii_lowercase();
            assert!(client_cmd(&mut l, &sub, argv, &mut out));
        }
        (out.to_vec(), client)
    }

    fn client_cmd(l: &mut Local<'_>, sub: &[u8], argv: &[&[u8]], out: &mut BytesMut) -> bool {
        client(l, sub, argv, out).is_some()
    }

    #[test]
    fn operator_commands_are_refused_to_clients_off_loopback() {
        let cmds: [&[&[u8]]; 5] = [
            &[b"CLIENT", b"KILL", b"127.0.0.1:1"],
            &[b"CLIENT", b"KILL", b"ID", b"1"],
            &[b"CLIENT", b"PAUSE", b"100000"],
            &[b"CLIENT", b"UNPAUSE"],
            &[b"MONITOR"],
        ];
        for argv in cmds {
            let (out, client) = run(argv, false);
            assert_eq!(out, format!("-{NOPERM}\r\n").into_bytes(), "{argv:?}");
            assert!(!client.monitoring && client.monitor.is_none() && !client.closing);
        }
        assert!(!pause::active(60), "a refused CLIENT PAUSE paused the pool");
        // The same calls from loopback are accepted.
        let (out, _) = run(&[b"CLIENT", b"PAUSE", b"1"], true);
        assert_eq!(out, b"+OK\r\n");
        let (out, client) = run(&[b"MONITOR"], true);
        assert_eq!(out, b"+OK\r\n");
        assert!(client.monitoring);
    }
}
