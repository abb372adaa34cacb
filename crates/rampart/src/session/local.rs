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

use crate::ha::link::{Link, Val};
use crate::handshake::Handshake;
use crate::reply::pending::Pending;
use crate::text::sanitize;
use crate::topology::policy::{Named, Policy};
use crate::topology::snapshot::Snapshot;
use crate::topology::{PoolRt, Shared};
use crate::upstream::pool::WorkerPool;
use rampart_config::ServerAddr;

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
    /// The client's address as Redis shows it: `ip:port`, or the unix socket path and `:0`.
    pub addr: String,
    /// The client said `HELLO 3`: its replies are RESP3, and its requests ride the
    /// connections that said `HELLO 3` too.
    pub resp3: bool,
    /// The session's entry in the process' client registry (`CLIENT LIST`, `CLIENT KILL`).
    pub entry: Option<Arc<crate::observe::clients::Entry>>,
    /// `CLIENT REPLY OFF`: replies are dropped until `CLIENT REPLY ON`.
    pub reply_off: bool,
    /// `CLIENT REPLY SKIP`: the next command's reply is dropped.
    pub skip_next: bool,
    /// The session ran `MONITOR`.
    pub monitoring: bool,
    /// A monitor just started, for the session's read loop to take and serve.
    pub monitor: Option<crate::observe::monitor::Monitor>,
    /// The next request waits for `CLIENT PAUSE` to end, until this time at the latest.
    pub held: Option<std::time::Instant>,
    /// In a pool with `users:`, the user the client is (`None` until it authenticates, or
    /// always in a pool without users).
    pub user: Option<Arc<rampart_config::User>>,
    /// The next request is an `AUTH` held back by the failed-AUTH back-off until this time
    /// (`session::backoff`).
    pub auth_held: Option<std::time::Instant>,
    /// The `AUTH` at the front of the buffer waited out its back-off: it runs now.
    pub auth_waited: bool,
}

impl ClientState {
    /// Whether the client may run operator commands (`CLIENT KILL`, `CLIENT PAUSE`,
    /// `CLIENT UNPAUSE`, `MONITOR`): in a pool with users, whenever its rules allowed the
    /// command (checked before it got here); in a pool without users, only from loopback or
    /// a unix socket.
    pub fn may_operate(&self) -> bool {
        self.user.is_some() || self.local
    }

    /// Whether the client may run `RAMPART SWITCHOVER`: in a pool with users, a user whose
    /// rules allow every `@admin` command; in a pool without users, a client on loopback or a
    /// unix socket.
    pub fn is_operator(&self) -> bool {
        match &self.user {
            Some(u) => u.rules.is_admin(),
            None => self.local,
        }
    }
}

/// The narrow view of a session that a local answer may use.
pub struct Local<'a> {
    /// The client's own state.
    pub client: &'a mut ClientState,
    /// The pool the client connected to.
    pub pool: &'a Arc<PoolRt>,
    /// This worker's view of that pool: where a read of a shard would go (RAMPART KEYSHARD).
    pub routes: &'a WorkerPool,
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
        // RESET drops the name, the protocol (back to RESP2) and, like Redis, the
        // authentication of the connection.
        "reset" => {
            ctx.client.name = None;
            ctx.client.resp3 = false;
            if let Some(e) = &ctx.client.entry {
                e.set_flag(crate::observe::clients::FLAG_RESP3, false);
            }
            (ctx.client.authed, ctx.client.user) = crate::session::acl::initial(&ctx.pool.conf);
            // Replies back on, out of MONITOR mode.
            ctx.client.reply_off = false;
            ctx.client.skip_next = false;
            ctx.client.monitoring = false;
            encode::simple(&mut out, b"RESET");
        }
        "auth" => auth(ctx, argv, &mut out),
        "hello" => hello(ctx, argv, &mut out),
        "client|unblock" => return crate::session::conn::unblock(ctx, argv),
        name if name == "client" || name.starts_with("client|") => client(ctx, argv, &mut out),
        "info" => return info(ctx, argv),
        "time" => crate::session::conn::time(&mut out),
        "monitor" => crate::session::conn::monitor(ctx, &mut out),
        "script|kill" | "function|kill" => return kill_script(ctx, argv),
        name if name == "command" || name.starts_with("command|") => {
            command(argv, &ctx.pool.policy, &mut out);
            if ctx.client.resp3 {
                out = crate::session::resp3::command_reply(argv, &out);
            }
        }
        name if matches!(name, "readonly" | "readwrite" | "asking")
            || name.starts_with("cluster|") =>
        {
            return Answer::Reply(crate::session::clusterview::answer(ctx, name, argv))
        }
        other => encode::error(
            &mut out,
            &format!("ERR '{other}' is not answered by rampart"),
        ),
    }
    Answer::Reply(out)
}

/// SELECT: clients see the pool's `redis_db` as database 0, as with twemproxy.
fn select(ctx: &Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    match std::str::from_utf8(argv[1])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        None => encode::error(out, "ERR value is not an integer or out of range"),
        Some(0) => encode::simple(out, b"OK"),
        Some(_) => encode::error(
            out,
            &format!(
                "ERR rampart: pool '{}' serves one database, which clients see as database 0",
                ctx.pool.conf.name
            ),
        ),
    }
}

/// AUTH as Redis answers it with one user, `default`: its password is the pool's
/// `redis_auth`; without one, `default` has no password and takes any.
///
/// In a pool with `users:`, the user named (or `default`) and its password
/// (`session::acl::auth`). Every failure is counted and logged (user name and address, never
/// the password) and feeds the back-off of `session::backoff`.
fn auth(ctx: &mut Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    let (user, given) = match argv {
        [_, p] => (None, *p),
        [_, u, p] => (Some(*u), *p),
        _ => return encode::error(out, "ERR syntax error"),
    };
    if !ctx.pool.conf.users.is_empty() {
        if !crate::session::acl::auth(ctx, user, given, out) {
            auth_failed(ctx, user);
        }
        return;
    }
    let pass = ctx.pool.conf.redis_auth.as_deref();
    let ok = match (user, pass) {
        (None, None) => {
            return encode::error(out, "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        }
        (Some(u), _) if u != b"default" => false,
        (_, None) => true,
        (_, Some(p)) => given == p.as_bytes(),
    };
    if ok {
        ctx.client.authed = true;
        encode::simple(out, b"OK");
    } else {
        auth_failed(ctx, user);
        encode::error(out, crate::session::acl::WRONGPASS);
    }
}

/// Counts, logs and remembers (for the back-off) a failed `AUTH`.
fn auth_failed(ctx: &Local<'_>, user: Option<&[u8]>) {
    crate::session::backoff::failed(crate::session::backoff::ip_of(&ctx.client.addr));
    // Anyone who reaches the port can cause this line: its rate is bounded (every failure is
    // still counted, and slowed per address by the back-off).
    static LINES: crate::observe::loglines::Lines = crate::observe::loglines::Lines::new();
    if let Some(left_out) = LINES.admit() {
        let more = crate::observe::loglines::more(left_out, "failed AUTH");
        tracing::warn!(
            pool = %ctx.pool.conf.name,
            client = %ctx.client.addr,
            user = %sanitize(user.unwrap_or(b"default"), 64),
            "AUTH failed{more}"
        );
    }
}

/// HELLO `[protover [AUTH username password] [SETNAME name]]`, answered as Redis 7 answers
/// it: `server`, `version`, `proto`, `id`, `mode`, `role`, `modules`, a map in RESP3 and a
/// flat array in RESP2. `HELLO 3` switches the session to RESP3 and `HELLO 2` back; any other
/// version is `NOPROTO`. Nothing changes when an option is refused.
fn hello(ctx: &mut Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    let mut i = 1;
    let mut resp3 = ctx.client.resp3;
    if let Some(v) = argv.get(1) {
        match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(2) => resp3 = false,
            Some(3) => resp3 = true,
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
    let mut auth_with = None;
    let mut name = None;
    while i < argv.len() {
        let opt = argv[i].to_ascii_lowercase();
        match (&opt[..], argv.get(i + 1), argv.get(i + 2)) {
            (b"auth", Some(u), Some(p)) => {
                auth_with = Some((*u, *p));
                i += 3;
            }
            (b"setname", Some(n), _) => {
                if n.iter().any(|&c| c <= b' ' || c > b'~') {
                    return encode::error(
                        out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                name = Some(*n);
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
    if let Some((u, p)) = auth_with {
        let mut tmp = BytesMut::new();
        auth(ctx, &[b"auth", u, p], &mut tmp);
        if tmp.first() == Some(&b'-') {
            out.extend_from_slice(&tmp);
            return;
        }
    }
    if !ctx.client.authed {
        return encode::error(out, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(n) = name {
        ctx.client.name = (!n.is_empty()).then(|| n.to_vec());
    }
    ctx.client.resp3 = resp3;
    if let Some(e) = &ctx.client.entry {
        e.set_flag(crate::observe::clients::FLAG_RESP3, resp3);
    }
    if resp3 {
        encode::map_header(out, 7);
    } else {
        encode::array_header(out, 14);
    }
    for (k, v) in [
        ("server", "redis"),
        ("version", rampart_commands::REDIS_VERSION),
    ] {
        encode::bulk(out, k.as_bytes());
        encode::bulk(out, v.as_bytes());
    }
    encode::bulk(out, b"proto");
    encode::integer(out, if resp3 { 3 } else { 2 });
    encode::bulk(out, b"id");
    encode::integer(out, ctx.client.id as i64);
    encode::bulk(out, b"mode");
    encode::bulk(out, mode(ctx).as_bytes());
    encode::bulk(out, b"role");
    encode::bulk(out, b"master");
    encode::bulk(out, b"modules");
    encode::array_header(out, 0);
}

/// What HELLO's `mode` and INFO's `redis_mode` say: `cluster` for a pool with a cluster view,
/// else `standalone`.
fn mode(ctx: &Local<'_>) -> &'static str {
    if ctx.pool.conf.cluster_view.is_some() {
        "cluster"
    } else {
        "standalone"
    }
}

fn client(ctx: &mut Local<'_>, argv: &[&[u8]], out: &mut BytesMut) {
    let sub = argv
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    // Subcommands Redis 7.0 does not know get its answer, but NO-TOUCH (newer clients send
    // it at connect time) is accepted.
    let known = rampart_commands::lookup(b"client")
        .is_some_and(|c| rampart_commands::lookup_sub(c, &sub).is_some());
    if !known && sub != b"no-touch" {
        return encode::error(
            out,
            &format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                sanitize(argv.get(1).copied().unwrap_or(b""), 128)
            ),
        );
    }
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
            None => encode::null_for(out, ctx.client.resp3),
        },
        (b"id", 2) => encode::integer(out, ctx.client.id as i64),
        (b"setinfo", 4) => encode::simple(out, b"OK"),
        _ if crate::session::conn::client(ctx, &sub, argv, out).is_some() => {}
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

/// `COMMAND` and its subcommands, from the command table. INFO, DOCS and GETKEYS take a
/// name as the pool's clients see it (`policy`): a renamed command under its new name, and
/// nothing under the old one or a denied one, as Redis answers after `rename-command`.
fn command(argv: &[&[u8]], policy: &Policy, out: &mut BytesMut) {
    let sub = argv
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let mut buf = Vec::new();
    let names = || argv.iter().skip(2).map(|n| named(policy, n));
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
        b"list" => command_list(argv, out),
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
        b"getkeys" | b"getkeysandflags" if argv.len() >= 3 => {
            let flags = sub.as_slice() == b"getkeysandflags";
            command_keys(named(policy, argv[2]), &argv[2..], flags, out);
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

/// The command `name` stands for in a pool with `policy` (`None`: unknown there).
fn named(policy: &Policy, name: &[u8]) -> Option<&'static Command> {
    match policy.lookup(name) {
        Named::Table(c) => c.filter(|c| !policy.denied(c)),
        Named::Renamed(c) => Some(c),
    }
}

/// `COMMAND GETKEYS command arg...` (the keys of the call `inner`, `found` its command), or with `flags`
/// `COMMAND GETKEYSANDFLAGS`: each key with the flags of the key spec that found it
/// (arguments flagged not_key, as SPUBLISH's channel, are no keys there, as in Redis).
fn command_keys(found: Option<&'static Command>, inner: &[&[u8]], flags: bool, out: &mut BytesMut) {
    let Some(c) = found else {
        return encode::error(out, "ERR Invalid command specified");
    };
    let c = match c.resolve(inner) {
        Ok(c) => c,
        Err(e) => return encode::error(out, &format!("ERR {e}")),
    };
    let mut keys = Vec::new();
    let found = if flags {
        c.keys_with_flags(inner, &mut keys)
    } else {
        let mut plain = Vec::new();
        let r = c.key_indices(inner, &mut plain);
        keys.extend(plain.into_iter().map(|k| (k, Default::default())));
        r
    };
    match found {
        Ok(()) if keys.is_empty() => encode::error(out, "ERR The command has no key arguments"),
        Ok(()) => {
            encode::array_header(out, keys.len());
            for (k, key_flags) in keys {
                if !flags {
                    encode::bulk(out, inner[k]);
                    continue;
                }
                encode::array_header(out, 2);
                encode::bulk(out, inner[k]);
                let names: Vec<&str> = key_flags.names().collect();
                encode::array_header(out, names.len());
                for n in names {
                    encode::simple(out, n.as_bytes());
                }
            }
        }
        Err(e) => encode::error(out, &format!("ERR {e}")),
    }
}

/// `COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]`: the names of
/// the commands and subcommands (`acl|cat`) of the table, as Redis 7 lists them. No module
/// is loaded, so `MODULE` lists nothing; `ACLCAT` takes a category without its `@`, any case
/// (an unknown one lists nothing); `PATTERN` is a glob matched without regard to case.
fn command_list(argv: &[&[u8]], out: &mut BytesMut) {
    enum Filter {
        All,
        Nothing,
        Category(Vec<u8>),
        Pattern(Vec<u8>),
    }
    let filter = match argv.get(2..) {
        Some([]) | None => Filter::All,
        Some([by, kind, value]) if by.eq_ignore_ascii_case(b"filterby") => {
            match kind.to_ascii_lowercase().as_slice() {
                b"module" => Filter::Nothing,
                b"aclcat" => Filter::Category(value.to_ascii_lowercase()),
                b"pattern" => Filter::Pattern(value.to_ascii_lowercase()),
                _ => return encode::error(out, "ERR syntax error"),
            }
        }
        Some(_) => return encode::error(out, "ERR syntax error"),
    };
    let keep = |c: &Command| match &filter {
        Filter::All => true,
        Filter::Nothing => false,
        Filter::Category(cat) => c
            .acl_categories
            .iter()
            .any(|a| a.as_bytes().get(1..).is_some_and(|a| a == cat.as_slice())),
        Filter::Pattern(p) => rampart_commands::acl::glob_match(p, c.name.as_bytes()),
    };
    // Redis lists subcommands ("acl|cat") as well as commands.
    let mut names = Vec::new();
    for c in rampart_commands::all() {
        if keep(c) {
            names.push(c.name);
        }
        names.extend(c.subcommands.iter().filter(|s| keep(s)).map(|s| s.name));
    }
    encode::array_header(out, names.len());
    for n in names {
        encode::bulk(out, n.as_bytes());
    }
}

/// INFO: the sections clients and their tools read, in Redis' format (`server`, `clients`,
/// `memory`, `stats`, `replication` with rampart's view of the primaries, `cluster`,
/// `commandstats` from rampart's per-command statistics), rampart's own `pools` section, and
/// the keyspace section summed over the shards. With no argument (or `default`) every section
/// but `commandstats`, as Redis leaves it out; `all` and `everything` add it.
fn info(ctx: &mut Local<'_>, argv: &[&[u8]]) -> Answer {
    let want: Vec<String> = argv[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = want.iter().any(|w| w == "all" || w == "everything");
    let default = want.is_empty() || all || want.iter().any(|w| w == "default");
    let has = |s: &str| default || want.iter().any(|w| w == s);
    let shared = &ctx.shared;
    let m = &shared.metrics;
    let mut t = String::new();
    if has("server") {
        let uptime = shared.started.elapsed().as_secs();
        let port = match &ctx.pool.conf.listen {
            rampart_config::Listen::Tcp { port, .. } => *port,
            _ => 0,
        };
        let path = |p: &std::path::Path| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        };
        let _ = write!(
            t,
            "# Server\r\nredis_version:{}\r\nredis_mode:{}\r\nrampart_version:{}\r\nos:{}\r\narch_bits:{}\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nexecutable:{}\r\nconfig_file:{}\r\nworkers:{}\r\n\r\n",
            rampart_commands::REDIS_VERSION,
            mode(ctx),
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            usize::BITS,
            std::process::id(),
            run_id(),
            port,
            uptime,
            uptime / 86_400,
            std::env::current_exe().map(|p| path(&p)).unwrap_or_default(),
            shared.config_path.as_deref().map(path).unwrap_or_default(),
            shared.workers,
        );
    }
    if has("clients") {
        let _ = write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\nblocked_clients:{}\r\n\r\n",
            m.global_sum(|w| &w.curr_connections),
            crate::session::blocking::blocked_clients()
        );
    }
    if has("memory") {
        let (rss, peak) = process_memory();
        let _ = write!(
            t,
            "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{peak}\r\nused_memory_peak_human:{}\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\n\r\n",
            human_bytes(rss),
            human_bytes(rss),
            human_bytes(peak),
        );
    }
    if has("stats") {
        let _ = write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nauth_failures:{}\r\nauth_delayed:{}\r\n\r\n",
            m.global_sum(|w| &w.total_connections),
            m.global_sum(|w| &w.commands),
            crate::session::backoff::failures(),
            crate::session::backoff::delayed(),
        );
    }
    if has("replication") {
        t.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n");
        for p in shared.pools.load().iter() {
            for s in &p.shards {
                let view = s.view();
                let primary = view
                    .primary
                    .and_then(|i| view.nodes.get(i))
                    .map(|n| n.addr.to_string())
                    .unwrap_or_else(|| "none".to_string());
                let _ = write!(
                    t,
                    "primary_{}_{}:addr={},writable={}\r\n",
                    p.conf.name,
                    s.name,
                    primary,
                    s.write_target(&view).is_some() as u8
                );
            }
        }
        t.push_str("\r\n");
    }
    if has("cluster") {
        let on = ctx.pool.conf.cluster_view.is_some() as u8;
        let _ = write!(t, "# Cluster\r\ncluster_enabled:{on}\r\n");
        // rampart's own lines: each cluster pool's slot map.
        for p in shared.pools.load().iter() {
            if let Some(c) = &p.cluster {
                let (adopted, refused) = c.counts();
                let table = c.table();
                let uncovered = (0..crate::topology::cluster::SLOTS as u16)
                    .filter(|&s| table.shard(s).is_none())
                    .count();
                let _ = write!(
                    t,
                    "rampart_cluster_{}:shards={},maps_adopted={adopted},maps_refused={refused},slots_uncovered={uncovered}\r\n",
                    info_key(&[&p.conf.name]),
                    p.shards.len()
                );
            }
        }
        t.push_str("\r\n");
    }
    if all || want.iter().any(|w| w == "commandstats") {
        t.push_str("# Commandstats\r\n");
        for (name, tot) in m.commands() {
            let (calls, usec) = (tot.calls, tot.sum_us);
            if rampart_commands::lookup(name.as_bytes()).is_none() {
                continue;
            }
            let _ = write!(
                t,
                "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={:.2},failed_calls={}\r\n",
                usec as f64 / calls.max(1) as f64,
                tot.errors
            );
        }
        t.push_str("\r\n");
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
        // As Redis: sections are separated by a blank line, and the last has none after it.
        if t.ends_with("\r\n\r\n") {
            t.truncate(t.len() - 2);
        }
        let mut out = BytesMut::new();
        encode::text_for(&mut out, ctx.client.resp3, t.as_bytes());
        Answer::Reply(out)
    }
}

/// SCRIPT KILL / FUNCTION KILL: a running script blocks the connection it was sent on, which
/// is a connection the worker shares, so the kill travels on a short-lived connection of its
/// own to every node of the pool (a read-only script may run on a replica), opened the way
/// the pool's connections are but with AUTH only (a busy server answers SELECT and a
/// cluster pool's READONLY with BUSY; the kill needs neither). The replies merge as one server would
/// answer: `OK` when some node stopped a script; else a refusal such as `UNKILLABLE`; else
/// `NOTBUSY` when every node that answered had nothing running; an error only when no node
/// answered. Every node gets the pool's `timeout`.
fn kill_script(ctx: &mut Local<'_>, argv: &[&[u8]]) -> Answer {
    let nodes: Vec<ServerAddr> = ctx
        .pool
        .shards
        .iter()
        .flat_map(|s| {
            s.view()
                .nodes
                .iter()
                .map(|n| n.addr.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    let command: Vec<Vec<u8>> = argv.iter().map(|a| a.to_vec()).collect();
    let seq = ctx.pending.push_waiting();
    let pending = Rc::clone(ctx.pending);
    let pool = Arc::clone(ctx.pool);
    tokio::task::spawn_local(async move {
        let limit = pool.timeout();
        let command = Rc::new(command);
        let calls: Vec<_> = nodes
            .iter()
            .map(|addr| {
                let (addr, command) = (addr.clone(), Rc::clone(&command));
                let handshake = Arc::clone(&pool.handshake);
                tokio::task::spawn_local(async move {
                    kill_on(&addr, &handshake, &command, limit).await
                })
            })
            .collect();
        let mut results = Vec::with_capacity(calls.len());
        for c in calls {
            results.push(
                c.await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
            );
        }
        let mut out = BytesMut::new();
        let mut refused: Option<String> = None;
        let mut notbusy: Option<String> = None;
        let mut failed: Option<String> = None;
        let mut killed = false;
        for (addr, r) in nodes.iter().zip(results) {
            match r {
                Ok(Some(Val::Err(e))) if e.starts_with("NOTBUSY") => notbusy = Some(e),
                Ok(Some(Val::Err(e))) => refused = Some(e),
                Ok(Some(_)) => killed = true,
                Ok(None) => failed = Some(format!("{addr} did not answer")),
                Err(e) => failed = Some(format!("{addr}: {e}")),
            }
        }
        match (killed, refused, notbusy, failed) {
            (true, ..) => encode::simple(&mut out, b"OK"),
            (false, Some(e), ..) | (false, None, Some(e), _) => encode::error(&mut out, &e),
            (false, None, None, Some(f)) => encode::error(
                &mut out,
                &format!(
                    "ERR rampart: no node of pool '{}' answered the kill ({f})",
                    pool.conf.name
                ),
            ),
            (false, None, None, None) => {
                encode::error(&mut out, "NOTBUSY No scripts in execution right now.")
            }
        }
        pending.deliver(seq, 0, &out);
    });
    Answer::Later
}

/// Send `command` (SCRIPT KILL or FUNCTION KILL) to `addr` on a connection of its own,
/// opened with the pool's AUTH (and TLS); its reply, within `limit` for each step.
async fn kill_on(
    addr: &ServerAddr,
    handshake: &Handshake,
    command: &[Vec<u8>],
    limit: std::time::Duration,
) -> std::io::Result<Option<Val>> {
    // AUTH only: a busy server answers SELECT and READONLY with BUSY.
    let mut c = Link::open(addr, &handshake.auth_only(), limit)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let argv: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
    Ok(c.call(&[&argv], limit).await?.pop())
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
            if let Some(sp) = &s.spool {
                let _ = write!(
                    t,
                    "{}:entries={},bytes={},oldest_age_ms={},appended={},replayed={},replay_errors={},refused={},stopped={},dir={},reason={}\r\n",
                    info_key(&["spool", ps.name(), &s.name]),
                    sp.entries,
                    sp.bytes,
                    sp.oldest_age_ms.map_or(-1, |v| v as i64),
                    sp.appended,
                    sp.replayed,
                    sp.replay_errors,
                    sp.refused,
                    u8::from(sp.stopped.is_some()),
                    info_text(&sp.dir),
                    info_text(sp.stopped.as_deref().unwrap_or("")),
                );
            }
            let _ = write!(
                t,
                "{}:primary={},writable={},nodes={},ejected={},switching={},failovers={},switchovers={},pubsub_resubscriptions={},circuit_open={},fail_open_misses={},fail_open_drops={},reason={}\r\n",
                info_key(&["shard", ps.name(), &s.name]),
                s.primary.as_deref().unwrap_or("none"),
                u8::from(s.writable),
                s.nodes.len(),
                u8::from(s.ejected),
                u8::from(s.switching),
                s.failovers,
                s.switchovers,
                s.resubscriptions,
                u8::from(s.circuit_open),
                s.fail_open_misses,
                s.fail_open_drops,
                info_text(&s.reason),
            );
            for n in &s.nodes {
                let lag = |v: Option<u64>| v.map_or(-1, |v| v as i64);
                let _ = write!(
                    t,
                    "{}:addr={},name={},shard={},role={},seen_role={},status={},up={},writable={},replica_usable={},ejected={},maintenance={},lag_ms={},lag_bytes={},stale={},stale_since={},reads_stale={},requests={},server_err={},server_timedout={},reason={}\r\n",
                    info_key(&["node", ps.name(), &s.name, &n.addr]),
                    n.addr,
                    info_text(n.name.as_deref().unwrap_or("")),
                    info_text(&s.name),
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
                    u8::from(n.stale),
                    lag(n.stale_since),
                    n.stale_reads,
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

/// What `RAMPART HELP` lists: every subcommand, one line each.
const RAMPART_HELP: [&str; 3] = [
    "RAMPART KEYSHARD <key> -- where the key lives: its shard, the hash the ring places it by, the node that takes its writes and the node a read would go to now (address and role; nil when there is none)",
    "RAMPART SWITCHOVER <shard> [<replica address>] -- planned switchover of a shard's primary (in a pool without users, clients on loopback or a unix socket only; in a pool with users, admin users only)",
    "RAMPART HELP -- this text",
];

/// The proxy's own commands (see `RAMPART_HELP`):
/// - `RAMPART KEYSHARD <key>`: an array of field/value pairs, `shard` (name), `hash`
///   (integer), `write` and `read` (`"<address> <role>"`, or nil when no node serves it).
/// - `RAMPART SWITCHOVER <shard> [<replica>]`: a planned switchover of one shard of the
///   client's pool (see [`crate::ha::switchover`]); the reply comes when it is done. Accepted
///   only from an operator ([`ClientState::is_operator`]: in a pool with users, an admin
///   user; otherwise a client on loopback or a unix socket).
/// - `RAMPART HELP`.
pub fn rampart(ctx: &mut Local<'_>, argv: &[&[u8]]) -> Answer {
    let sub = argv
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let mut out = BytesMut::new();
    match &sub[..] {
        b"help" if argv.len() == 2 => {
            encode::array_header(&mut out, RAMPART_HELP.len());
            for l in RAMPART_HELP {
                encode::bulk(&mut out, l.as_bytes());
            }
        }
        b"keyshard" if argv.len() == 3 => keyshard(ctx, argv[2], &mut out),
        b"switchover" if argv.len() == 3 || argv.len() == 4 => {
            if !ctx.client.is_operator() {
                let e = if ctx.client.user.is_some() {
                    "NOPERM this user has no permissions to run the 'rampart|switchover' command (RAMPART SWITCHOVER is for users whose rules allow +@admin)"
                } else {
                    "ERR rampart: admin commands are accepted only from clients on loopback or a unix socket"
                };
                encode::error(&mut out, e);
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
        b"help" | b"keyshard" | b"switchover" => encode::error(
            &mut out,
            &format!(
                "ERR wrong number of arguments for 'rampart|{}' command",
                String::from_utf8_lossy(&sub)
            ),
        ),
        _ => encode::error(
            &mut out,
            &format!(
                "ERR unknown subcommand '{}'. Try RAMPART HELP.",
                sanitize(argv.get(1).copied().unwrap_or(b""), 128)
            ),
        ),
    }
    Answer::Reply(out)
}

/// The process' resident memory and its peak, bytes (Linux `/proc/self/status`; 0 elsewhere).
fn process_memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Bytes as Redis writes them in INFO: `1.50M`, `980.00K`, `12B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, f64); 5] = [
        ("P", 1125899906842624.0),
        ("T", 1099511627776.0),
        ("G", 1073741824.0),
        ("M", 1048576.0),
        ("K", 1024.0),
    ];
    for (unit, size) in UNITS {
        if n as f64 >= size {
            return format!("{:.2}{unit}", n as f64 / size);
        }
    }
    format!("{n}B")
}

/// This process' run id: 40 random hex characters, chosen once.
fn run_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        (0..5)
            .map(|_| format!("{:08x}", crate::rand::next_u64() as u32))
            .collect()
    })
}

/// `RAMPART KEYSHARD <key>` (see [`rampart`]).
fn keyshard(ctx: &Local<'_>, key: &[u8], out: &mut BytesMut) {
    let Some(shard) = ctx.pool.shard_for_key(key) else {
        return encode::error(
            out,
            &format!(
                "ERR rampart: pool '{}' has no shard on its ring",
                ctx.pool.conf.name
            ),
        );
    };
    let rt = &ctx.pool.shards[shard];
    let view = rt.view();
    let role = |n: &crate::topology::node::NodeRt| {
        let primary = view
            .primary
            .and_then(|i| view.nodes.get(i))
            .is_some_and(|p| p.id == n.id);
        format!("{} {}", n.addr, if primary { "primary" } else { "replica" })
    };
    let write = rt.write_target(&view).map(|n| role(n));
    let read = crate::upstream::route::pick_read(ctx.routes, shard, &view, None).map(|n| role(&n));
    if ctx.client.resp3 {
        encode::map_header(out, 4);
    } else {
        encode::array_header(out, 8);
    }
    encode::bulk(out, b"shard");
    encode::bulk(out, rt.name.as_bytes());
    encode::bulk(out, b"hash");
    encode::integer(out, i64::from(ctx.pool.key_hash(key)));
    for (field, node) in [("write", write), ("read", read)] {
        encode::bulk(out, field.as_bytes());
        match node {
            Some(n) => encode::bulk(out, n.as_bytes()),
            None => encode::null_for(out, ctx.client.resp3),
        }
    }
}
