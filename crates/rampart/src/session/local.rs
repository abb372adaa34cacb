//! Commands the proxy answers itself: PING, ECHO, QUIT, COMMAND, HELLO, SELECT, AUTH, CLIENT and
//! INFO (whose keyspace section is summed over the shards).

use std::fmt::Write as _;

use bytes::BytesMut;
use rampart_commands::Command;
use resp::encode;

use crate::observe::stats::{PoolStat, ServerStat};
use crate::reply::merge::Merger;
use std::rc::Rc;
use std::sync::Arc;

use crate::reply::pending::Pending;
use crate::text::sanitize;
use crate::topology::snapshot::Snapshot;
use crate::topology::{PoolRt, Shared};

/// What the client is and said about itself: the part of a session local answers change.
pub struct ClientState {
    /// Session id (also picks the connection among `server_connections`).
    pub id: u64,
    /// Passed AUTH (or the pool needs none).
    pub authed: bool,
    /// CLIENT SETNAME value.
    pub name: Option<Vec<u8>>,
    /// No more requests are read; close once the replies are out.
    pub closing: bool,
    /// The client connected over loopback or a unix socket (admin commands are allowed).
    pub local: bool,
}

/// The narrow view of a session that a local answer may use.
pub struct Local<'a> {
    /// The client's own state.
    pub client: &'a mut ClientState,
    /// The pool the client connected to.
    pub pool: &'a Arc<PoolRt>,
    /// Process-wide state (statistics for INFO).
    pub shared: &'a Shared,
    /// The session's reply queue, for answers that come later.
    pub pending: &'a Rc<Pending>,
}

/// What the session does with a local answer.
pub enum Answer {
    /// Reply with these bytes (one RESP value).
    Reply(BytesMut),
    /// Send this command to every shard and merge the replies (INFO with its keyspace
    /// section).
    Broadcast(Merger, Vec<Vec<u8>>),
    /// The answer reserved its reply slot and fills it later (RAMPART SWITCHOVER).
    Later,
}

/// Answer a `Route::Local` command.
pub fn answer(ctx: &mut Local<'_>, cmd: &Command, argv: &[&[u8]]) -> Answer {
    let mut out = BytesMut::new();
    match cmd.name {
        // The table's arity (-1) is looser than Redis' own check: at most one message.
        "ping" if argv.len() > 2 => {
            encode::error(&mut out, "ERR wrong number of arguments for 'ping' command")
        }
        "ping" => match argv.get(1) {
            Some(msg) => encode::bulk(&mut out, msg),
            None => encode::simple(&mut out, b"PONG"),
        },
        "echo" => encode::bulk(&mut out, argv[1]),
        "quit" => {
            encode::simple(&mut out, b"OK");
            ctx.client.closing = true;
        }
        "select" => select(ctx, argv, &mut out),
        // RESET drops the name and, like Redis, the authentication of the connection.
        "reset" => {
            ctx.client.name = None;
            ctx.client.authed = ctx.pool.conf.redis_auth.is_none();
            encode::simple(&mut out, b"RESET");
        }
        "auth" => auth(ctx, argv, &mut out),
        "hello" => hello(ctx, argv, &mut out),
        name if name == "client" || name.starts_with("client|") => client(ctx, argv, &mut out),
        "info" => return info(ctx, argv),
        name if name == "command" || name.starts_with("command|") => command(argv, &mut out),
        other => encode::error(
            &mut out,
            &format!("ERR '{other}' is not answered by rampart"),
        ),
    }
    Answer::Reply(out)
}

fn select(ctx: &Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    let db = ctx.pool.conf.redis_db;
    match std::str::from_utf8(argv[1])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        None => encode::error(out, "ERR value is not an integer or out of range"),
        Some(n) if n == db as i64 => encode::simple(out, b"OK"),
        Some(_) => encode::error(
            out,
            &format!("ERR rampart: this pool serves database {db} only (redis_db)"),
        ),
    }
}

fn auth(ctx: &mut Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    let Some(pass) = ctx.pool.conf.redis_auth.clone() else {
        return encode::error(out, "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    };
    let (user, given) = match argv {
        [_, p] => (&b"default"[..], *p),
        [_, u, p] => (*u, *p),
        _ => return encode::error(out, "ERR syntax error"),
    };
    if user == b"default" && given == pass.as_bytes() {
        ctx.client.authed = true;
        encode::simple(out, b"OK");
    } else {
        encode::error(
            out,
            "WRONGPASS invalid username-password pair or user is disabled.",
        );
    }
}

fn hello(ctx: &mut Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    let mut i = 1;
    if let Some(v) = argv.get(1) {
        match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(2) => {}
            Some(3) => {
                return encode::error(
                    out,
                    "NOPROTO sorry, rampart speaks RESP2 only for now; use HELLO 2 or no HELLO",
                )
            }
            Some(_) => return encode::error(out, "NOPROTO unsupported protocol version"),
            None => {
                return encode::error(
                    out,
                    "ERR Protocol version is not an integer or out of range",
                )
            }
        }
        i = 2;
    }
    while i < argv.len() {
        let opt = argv[i].to_ascii_lowercase();
        match (&opt[..], argv.get(i + 1), argv.get(i + 2)) {
            (b"auth", Some(u), Some(p)) => {
                let mut tmp = BytesMut::new();
                auth(ctx, &[b"auth", u, p], &mut tmp);
                if tmp.first() == Some(&b'-') {
                    out.extend_from_slice(&tmp);
                    return;
                }
                i += 3;
            }
            (b"setname", Some(n), _) => {
                ctx.client.name = Some(n.to_vec());
                i += 2;
            }
            _ => {
                return encode::error(
                    out,
                    &format!(
                        "ERR Syntax error in HELLO option '{}'",
                        sanitize(argv[i], 64)
                    ),
                )
            }
        }
    }
    if !ctx.client.authed {
        return encode::error(out, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    encode::array_header(out, 14);
    for (k, v) in [
        ("server", "redis"),
        ("version", "7.0.0"),
        ("proxy", concat!("rampart ", env!("CARGO_PKG_VERSION"))),
    ] {
        encode::bulk(out, k.as_bytes());
        encode::bulk(out, v.as_bytes());
    }
    encode::bulk(out, b"proto");
    encode::integer(out, 2);
    encode::bulk(out, b"id");
    encode::integer(out, ctx.client.id as i64);
    encode::bulk(out, b"mode");
    encode::bulk(out, b"proxy");
    encode::bulk(out, b"role");
    encode::bulk(out, b"master");
}

fn client(ctx: &mut Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    let sub = argv
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    match (&sub[..], argv.len()) {
        (b"setname", 3) => {
            if argv[2].iter().any(|&c| c <= b' ' || c > b'~') {
                return encode::error(
                    out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            ctx.client.name = (!argv[2].is_empty()).then(|| argv[2].to_vec());
            encode::simple(out, b"OK");
        }
        (b"getname", 2) => match &ctx.client.name {
            Some(n) => encode::bulk(out, n),
            None => encode::null_bulk(out),
        },
        (b"id", 2) => encode::integer(out, ctx.client.id as i64),
        (b"setinfo", 4) => encode::simple(out, b"OK"),
        (b"setname" | b"getname" | b"id" | b"setinfo", _) => encode::error(
            out,
            &format!(
                "ERR wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&sub)
            ),
        ),
        _ => encode::error(
            out,
            &format!(
                "ERR rampart: CLIENT {} is not supported through the proxy (SETNAME, GETNAME, ID and SETINFO are)",
                sanitize(argv.get(1).copied().unwrap_or(b""), 32).to_uppercase()
            ),
        ),
    }
}

fn command(argv: &[&[u8]], out: &mut BytesMut) {
    let sub = argv
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let mut buf = Vec::new();
    let names = || argv.iter().skip(2).map(|n| rampart_commands::lookup(n));
    match &sub[..] {
        b"" => {
            let all = rampart_commands::all();
            encode::array_header(out, all.len());
            for c in all {
                buf.clear();
                rampart_commands::encode_info(c, &mut buf);
                out.extend_from_slice(&buf);
            }
        }
        b"count" => encode::integer(out, rampart_commands::all().len() as i64),
        b"list" => {
            // Redis lists subcommands ("acl|cat") as well as commands.
            let all = rampart_commands::all();
            encode::array_header(out, all.iter().map(|c| 1 + c.subcommands.len()).sum());
            for c in all {
                encode::bulk(out, c.name.as_bytes());
                for sub in c.subcommands {
                    encode::bulk(out, sub.name.as_bytes());
                }
            }
        }
        b"info" => {
            encode::array_header(out, argv.len() - 2);
            for c in names() {
                match c {
                    Some(c) => {
                        buf.clear();
                        rampart_commands::encode_info(c, &mut buf);
                        out.extend_from_slice(&buf);
                    }
                    None => encode::null_bulk(out),
                }
            }
        }
        b"docs" => {
            let found: Vec<&Command> = if argv.len() == 2 {
                rampart_commands::all().iter().collect()
            } else {
                names().flatten().collect()
            };
            encode::array_header(out, found.len() * 2);
            for c in found {
                encode::bulk(out, c.name.as_bytes());
                buf.clear();
                rampart_commands::encode_docs(c, &mut buf);
                out.extend_from_slice(&buf);
            }
        }
        b"getkeys" if argv.len() >= 3 => {
            let inner = &argv[2..];
            let Some(c) = rampart_commands::lookup(inner[0]) else {
                return encode::error(out, "ERR Invalid command specified");
            };
            let c = match c.resolve(inner) {
                Ok(c) => c,
                Err(e) => return encode::error(out, &format!("ERR {e}")),
            };
            let mut keys = Vec::new();
            match c.key_indices(inner, &mut keys) {
                Ok(()) if keys.is_empty() => {
                    encode::error(out, "ERR The command has no key arguments")
                }
                Ok(()) => {
                    encode::array_header(out, keys.len());
                    for k in keys {
                        encode::bulk(out, inner[k]);
                    }
                }
                Err(e) => encode::error(out, &format!("ERR {e}")),
            }
        }
        _ => encode::error(
            out,
            &format!(
                "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                sanitize(argv[1], 128)
            ),
        ),
    }
}

/// INFO: the proxy's own sections, and the keyspace section summed over the shards.
fn info(ctx: &mut Local<'_>, argv: &[&[u8]]) -> Answer {
    let want: Vec<String> = argv[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = want.is_empty()
        || want
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let has = |s: &str| all || want.iter().any(|w| w == s);
    let shared = &ctx.shared;
    let m = &shared.metrics;
    let mut t = String::new();
    if has("server") {
        let _ = write!(
            t,
            "# Server\r\nrampart_version:{}\r\nredis_version:7.0.0\r\nredis_mode:proxy\r\nos:{}\r\narch_bits:{}\r\nprocess_id:{}\r\nworkers:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            usize::BITS,
            std::process::id(),
            shared.workers,
            shared.started.elapsed().as_secs(),
        );
    }
    if has("clients") {
        let _ = write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\n\r\n",
            m.global_sum(|w| &w.curr_connections)
        );
    }
    if has("stats") {
        let _ = write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\r\n",
            m.global_sum(|w| &w.total_connections),
            m.global_sum(|w| &w.commands)
        );
    }
    if has("pools") {
        pools_section(&mut t, shared);
    }
    if has("keyspace") {
        Answer::Broadcast(
            Merger::Info { head: t },
            vec![b"INFO".to_vec(), b"keyspace".to_vec()],
        )
    } else {
        let mut out = BytesMut::new();
        encode::bulk(&mut out, t.as_bytes());
        Answer::Reply(out)
    }
}

/// An INFO key from `parts`: joined by `_`, with `:` (the key/value separator) and white
/// space written as `_`, so an address keeps a stable, parseable key.
fn info_key(parts: &[&str]) -> String {
    parts
        .join("_")
        .chars()
        .map(|c| {
            if c == ':' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// A free-text INFO value: no commas (the field separator) or line breaks.
fn info_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ',' => ';',
            '\r' | '\n' => ' ',
            c => c,
        })
        .collect()
}

/// INFO `pools`: every pool, shard and node as the one snapshot
/// ([`crate::topology::snapshot`]) has them. Node keys are `node_<pool>_<shard>_<address>`,
/// stable across failovers; `reason` is the last field of a line.
fn pools_section(t: &mut String, shared: &Shared) {
    let m = &shared.metrics;
    let snap = Snapshot::of(&shared.pools.load_full());
    t.push_str("# Pools\r\n");
    for ps in &snap.pools {
        let p = &ps.pool;
        let _ = write!(
            t,
            "{}:kind={},shards={},ejected={},ready={},client_connections={},forward_error={},fragments={}\r\n",
            info_key(&["pool", ps.name()]),
            ps.kind.name(),
            ps.shards.len(),
            ps.shards.iter().filter(|s| s.ejected).count(),
            u8::from(ps.ready),
            m.pool_sum(p.index, PoolStat::ClientConnections),
            m.pool_sum(p.index, PoolStat::ForwardError),
            m.pool_sum(p.index, PoolStat::Fragments),
        );
        for s in &ps.shards {
            if !s.switch_state.is_empty() {
                let key = info_key(&["switchover", ps.name(), &s.name]);
                let _ = write!(t, "{key}:{}\r\n", info_text(&s.switch_state));
            }
            let _ = write!(
                t,
                "{}:primary={},writable={},nodes={},ejected={},switching={},failovers={},switchovers={},reason={}\r\n",
                info_key(&["shard", ps.name(), &s.name]),
                s.primary.as_deref().unwrap_or("none"),
                u8::from(s.writable),
                s.nodes.len(),
                u8::from(s.ejected),
                u8::from(s.switching),
                s.failovers,
                s.switchovers,
                info_text(&s.reason),
            );
            for n in &s.nodes {
                let lag = |v: Option<u64>| v.map_or(-1, |v| v as i64);
                let _ = write!(
                    t,
                    "{}:addr={},name={},shard={},role={},seen_role={},status={},up={},writable={},replica_usable={},ejected={},maintenance={},lag_ms={},lag_bytes={},requests={},server_err={},server_timedout={},reason={}\r\n",
                    info_key(&["node", ps.name(), &s.name, &n.addr]),
                    n.addr,
                    n.name.as_deref().unwrap_or(""),
                    s.name,
                    n.role,
                    n.seen_role,
                    n.status.name(),
                    u8::from(n.up),
                    u8::from(n.writable),
                    u8::from(n.replica_usable),
                    u8::from(n.ejected),
                    u8::from(n.maintenance),
                    lag(n.lag_ms),
                    lag(n.lag_bytes),
                    n.node.sum(ServerStat::Requests),
                    n.node.sum(ServerStat::ServerErr),
                    n.node.sum(ServerStat::ServerTimedout),
                    info_text(&n.reason),
                );
            }
        }
    }
    t.push_str("\r\n");
}

/// `RAMPART SWITCHOVER <shard> [<replica>]`: a planned switchover of one shard of the client's
/// pool (see [`crate::ha::switchover`]); the reply comes when it is done. `RAMPART HELP` lists the
/// commands. Accepted only from clients on loopback or a unix socket.
pub fn rampart(ctx: &mut Local<'_>, argv: &[&[u8]]) -> Answer {
    let sub = argv
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let mut out = BytesMut::new();
    match &sub[..] {
        b"help" => {
            let lines: [&[u8]; 2] = [
                b"RAMPART SWITCHOVER <shard> [<replica address>] -- planned switchover of a shard's primary",
                b"RAMPART HELP -- this text",
            ];
            encode::array_header(&mut out, lines.len());
            for l in lines {
                encode::bulk(&mut out, l);
            }
        }
        b"switchover" if argv.len() == 3 || argv.len() == 4 => {
            if !ctx.client.local {
                encode::error(&mut out, "ERR rampart: admin commands are accepted only from clients on loopback or a unix socket");
                return Answer::Reply(out);
            }
            let name = String::from_utf8_lossy(argv[2]).into_owned();
            let Some(shard) = ctx.pool.shards.iter().position(|s| s.name == name) else {
                encode::error(
                    &mut out,
                    &format!(
                        "ERR rampart: pool '{}' has no shard '{}'",
                        ctx.pool.conf.name,
                        sanitize(argv[2], 64)
                    ),
                );
                return Answer::Reply(out);
            };
            let target = argv.get(3).map(|t| String::from_utf8_lossy(t).into_owned());
            let seq = ctx.pending.push_waiting();
            let pending = Rc::clone(ctx.pending);
            let pool = Arc::clone(ctx.pool);
            tokio::task::spawn_local(async move {
                let mut out = BytesMut::new();
                match crate::ha::switchover::run(pool, shard, target).await {
                    Ok(msg) => encode::simple(&mut out, msg.as_bytes()),
                    Err(e) => {
                        encode::error(&mut out, &format!("ERR rampart: switchover failed: {e}"))
                    }
                }
                pending.deliver(seq, 0, &out);
            });
            return Answer::Later;
        }
        _ => encode::error(
            &mut out,
            "ERR rampart: unknown or malformed RAMPART command; try RAMPART HELP",
        ),
    }
    Answer::Reply(out)
}
