//! rampart's routing class for every command (`Route`): the one hand-written part of the table.
//!
//! The generated table calls [`of`] for each entry at compile time. The decision is made from
//! Redis' own flags, with the exceptions listed by name in [`EXCEPTIONS`]:
//!
//! 1. a name in [`EXCEPTIONS`] gets the class written there, and every `cluster|...`
//!    subcommand is [`Route::Local`] (the proxy answers as a server without cluster support,
//!    or as the pool's cluster view);
//! 2. `pubsub` commands are [`Route::PubSub`]: the session's subscribed mode and the worker's
//!    subscriber hub serve them, placing each channel on a shard as a key;
//! 3. `blocking` commands are unsupported (they would stall a multiplexed backend connection);
//!    `XREAD` and `XREADGROUP` are exceptions: they carry the flag only for their `BLOCK` option,
//!    which the proxy must check per call (see [`crate::Command::blocks`]);
//! 4. `admin` commands are unsupported unless listed as [`Route::Admin`];
//! 5. container help (`config|help`, ...) is sent to any shard;
//! 6. commands with keys go to the shard of their keys ([`Route::Keys`]);
//! 7. anything else has no key to route by and is unsupported.
//!
//! Choices worth knowing: `TIME`, `LASTSAVE` and `LOLWUT` are [`Route::Keys`] commands without
//! keys, so the proxy sends them to a shard of its choice. `CLIENT INFO` is answered locally, like
//! `CLIENT SETNAME/GETNAME/ID`, `RESET`, `SELECT` and `INFO`. A container entry (`CONFIG`,
//! `CLIENT`, ...) is routed only after resolving its subcommand ([`crate::Command::resolve`]);
//! its own class matters only for `COMMAND` called alone (Local).

use crate::Flags;

/// What the proxy does with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Answered by the proxy itself.
    Local,
    /// Sent to the one shard that holds all its keys. A call without keys (e.g. `EVAL` with
    /// numkeys 0, `TIME`) goes to a shard the proxy picks.
    Keys,
    /// Split per shard by key, replies merged.
    FanOut(Merge),
    /// Keyless: sent to every shard, replies merged.
    AllShards(Merge),
    /// Changes every shard: refused unless the pool enables admin broadcast.
    Admin(Merge),
    /// Pub/Sub (SUBSCRIBE, PUBLISH, PUBSUB ...): served by the session's subscribed mode and
    /// the worker's subscriber connections, each channel placed on a shard as a key is.
    PubSub,
    /// Refused with this reason.
    Unsupported(&'static str),
}

/// How the replies of several shards become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// One reply per key, put back in the order of the keys (MGET).
    Array,
    /// Every shard must reply `+OK`; the client gets one `+OK`.
    AllOk,
    /// Integer replies are added up.
    Sum,
    /// Array replies are concatenated.
    Concat,
    /// SCAN: the cursor encodes the shard being scanned.
    Scan,
    /// RANDOMKEY: a non-nil reply of some shard.
    RandomKey,
    /// All replies must be equal; the client gets one of them.
    Same,
    /// Integer arrays combined element-wise with logical AND (SCRIPT EXISTS).
    And,
    /// The first shard's reply.
    First,
}

const TRANSACTION: &str = "transactions are not supported by the proxy";
const CLUSTER: &str = "cluster commands are not supported by the proxy";
const DATABASES: &str = "only database 0 is available through the proxy";

/// Commands whose class is not the flag-based default, by full lowercase name.
pub const EXCEPTIONS: &[(&str, Route)] = &[
    // Answered by the proxy.
    ("ping", Route::Local),
    ("echo", Route::Local),
    ("quit", Route::Local),
    ("hello", Route::Local),
    ("auth", Route::Local),
    ("select", Route::Local),
    ("reset", Route::Local),
    ("info", Route::Local),
    ("command", Route::Local),
    ("command|count", Route::Local),
    ("command|docs", Route::Local),
    ("command|getkeys", Route::Local),
    ("command|getkeysandflags", Route::Local),
    ("command|help", Route::Local),
    ("command|info", Route::Local),
    ("command|list", Route::Local),
    ("client|setname", Route::Local),
    ("client|getname", Route::Local),
    ("client|id", Route::Local),
    ("client|info", Route::Local),
    // About the connection itself (rampart's own clients), and subcommands newer than the
    // table (NO-TOUCH) reach the proxy's CLIENT answer through the container.
    ("client", Route::Local),
    ("client|list", Route::Local),
    ("client|kill", Route::Local),
    ("client|reply", Route::Local),
    ("client|no-evict", Route::Local),
    ("client|pause", Route::Local),
    ("client|unpause", Route::Local),
    ("client|unblock", Route::Local),
    ("monitor", Route::Local),
    ("time", Route::Local),
    // Split by key.
    ("mget", Route::FanOut(Merge::Array)),
    ("mset", Route::FanOut(Merge::AllOk)),
    ("del", Route::FanOut(Merge::Sum)),
    ("unlink", Route::FanOut(Merge::Sum)),
    ("touch", Route::FanOut(Merge::Sum)),
    ("exists", Route::FanOut(Merge::Sum)),
    // Keyless, every shard.
    ("dbsize", Route::AllShards(Merge::Sum)),
    ("keys", Route::AllShards(Merge::Concat)),
    ("scan", Route::AllShards(Merge::Scan)),
    ("randomkey", Route::AllShards(Merge::RandomKey)),
    ("script|load", Route::AllShards(Merge::Same)),
    ("script|exists", Route::AllShards(Merge::And)),
    // Keyless, one shard of the proxy's choice.
    ("lastsave", Route::Keys),
    ("lolwut", Route::Keys),
    // Admin broadcast.
    ("flushall", Route::Admin(Merge::AllOk)),
    ("flushdb", Route::Admin(Merge::AllOk)),
    ("script|flush", Route::Admin(Merge::AllOk)),
    ("function|flush", Route::Admin(Merge::AllOk)),
    ("function|load", Route::Admin(Merge::Same)),
    ("function|delete", Route::Admin(Merge::AllOk)),
    ("function|restore", Route::Admin(Merge::AllOk)),
    ("config|set", Route::Admin(Merge::AllOk)),
    ("config|get", Route::Admin(Merge::First)),
    ("config|resetstat", Route::Admin(Merge::AllOk)),
    ("config|rewrite", Route::Admin(Merge::AllOk)),
    // Blocking only with their BLOCK option, which the proxy checks per call.
    ("xread", Route::Keys),
    ("xreadgroup", Route::Keys),
    // Refused although the flags alone would allow them. The proxy's sessions answer
    // MULTI, EXEC, DISCARD, WATCH and UNWATCH themselves before routing; these entries are
    // for callers of the table that do not.
    ("multi", Route::Unsupported(TRANSACTION)),
    ("exec", Route::Unsupported(TRANSACTION)),
    ("discard", Route::Unsupported(TRANSACTION)),
    ("watch", Route::Unsupported(TRANSACTION)),
    ("unwatch", Route::Unsupported(TRANSACTION)),
    // The proxy's sessions answer WAIT themselves (on every shard's primary, on connections
    // of their own); callers of the table that do not refuse it.
    (
        "wait",
        Route::Unsupported(
            "WAIT counts the replicas that acknowledged the writes of its own server connection, which only a session that publishes first on a connection of its own can ask",
        ),
    ),
    ("move", Route::Unsupported(DATABASES)),
    ("swapdb", Route::Unsupported(DATABASES)),
    (
        "migrate",
        Route::Unsupported("MIGRATE is not supported by the proxy"),
    ),
    ("restore-asking", Route::Unsupported(CLUSTER)),
    // Answered by the proxy as a server without cluster support, or as the pool's cluster
    // view (every `cluster|...` subcommand too, see `of`).
    ("asking", Route::Local),
    ("readonly", Route::Local),
    ("readwrite", Route::Local),
    // A running script blocks the connection it came on: the proxy sends these to every
    // node on connections of their own.
    ("script|kill", Route::Local),
    ("function|kill", Route::Local),
];

/// The routing class of the command `name` (full lowercase name, `container|sub` for
/// subcommands) with Redis flags `flags`; `has_keys` tells whether Redis declares any key
/// position. Evaluated at compile time by the generated table.
#[must_use]
pub const fn of(name: &str, flags: Flags, has_keys: bool) -> Route {
    let mut i = 0;
    while i < EXCEPTIONS.len() {
        if str_eq(EXCEPTIONS[i].0, name) {
            return EXCEPTIONS[i].1;
        }
        i += 1;
    }
    if starts_with(name, "cluster|") {
        return Route::Local;
    }
    if flags.contains(Flags::PUBSUB) {
        return Route::PubSub;
    }
    if flags.contains(Flags::BLOCKING) {
        return Route::Unsupported("blocking commands are not supported by the proxy");
    }
    if flags.contains(Flags::ADMIN) {
        return Route::Unsupported("administrative commands are not supported by the proxy");
    }
    if ends_with(name, "|help") || has_keys {
        return Route::Keys;
    }
    Route::Unsupported("this command has no key to route by and is not supported by the proxy")
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn starts_with(s: &str, prefix: &str) -> bool {
    let (s, x) = (s.as_bytes(), prefix.as_bytes());
    if s.len() < x.len() {
        return false;
    }
    let mut i = 0;
    while i < x.len() {
        if s[i] != x[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn ends_with(s: &str, suffix: &str) -> bool {
    let (s, x) = (s.as_bytes(), suffix.as_bytes());
    if s.len() < x.len() {
        return false;
    }
    let off = s.len() - x.len();
    let mut i = 0;
    while i < x.len() {
        if s[off + i] != x[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{lookup, lookup_sub, Command};

    fn cmd(name: &str) -> &'static Command {
        let (parent, sub) = match name.split_once(' ') {
            Some((p, s)) => (p, Some(s)),
            None => (name, None),
        };
        let c = lookup(parent.as_bytes()).unwrap_or_else(|| panic!("{parent}"));
        sub.map_or(c, |s| {
            lookup_sub(c, s.as_bytes()).unwrap_or_else(|| panic!("{name}"))
        })
    }

    fn route(name: &str) -> Route {
        cmd(name).route
    }

    #[test]
    fn every_exception_names_a_real_command() {
        for (name, _) in EXCEPTIONS {
            assert!(
                crate::all()
                    .iter()
                    .flat_map(|c| std::iter::once(c).chain(c.subcommands))
                    .any(|c| c.name == *name),
                "{name} is not a Redis command"
            );
        }
    }

    #[test]
    fn local_commands() {
        for name in [
            "ping",
            "echo",
            "quit",
            "command",
            "command info",
            "command count",
            "command docs",
            "hello",
            "select",
            "auth",
            "client setname",
            "client getname",
            "client id",
            "client list",
            "client kill",
            "client reply",
            "client pause",
            "client unpause",
            "client no-evict",
            "monitor",
            "time",
            "info",
            "script kill",
            "function kill",
            "cluster info",
            "cluster slots",
            "cluster help",
            "cluster addslots",
            "readonly",
            "readwrite",
            "asking",
        ] {
            assert_eq!(route(name), Route::Local, "{name}");
        }
    }

    #[test]
    fn single_shard_commands() {
        for name in [
            "get",
            "set",
            "sinterstore",
            "lmove",
            "rpoplpush",
            "zunionstore",
            "pfmerge",
            "rename",
            "smove",
            "msetnx",
            "eval",
            "evalsha",
            "fcall",
            "fcall_ro",
            "sort",
            "sort_ro",
            "xread",
            "xreadgroup",
            "object encoding",
            "object freq",
            "memory usage",
            "xinfo stream",
            "bitop",
            "georadius",
            "config help",
        ] {
            assert_eq!(route(name), Route::Keys, "{name}");
        }
    }

    #[test]
    fn merged_commands() {
        assert_eq!(route("mget"), Route::FanOut(Merge::Array));
        assert_eq!(route("mset"), Route::FanOut(Merge::AllOk));
        for name in ["del", "unlink", "touch", "exists"] {
            assert_eq!(route(name), Route::FanOut(Merge::Sum), "{name}");
        }
        assert_eq!(route("dbsize"), Route::AllShards(Merge::Sum));
        assert_eq!(route("keys"), Route::AllShards(Merge::Concat));
        assert_eq!(route("scan"), Route::AllShards(Merge::Scan));
        assert_eq!(route("randomkey"), Route::AllShards(Merge::RandomKey));
        assert_eq!(route("script load"), Route::AllShards(Merge::Same));
        assert_eq!(route("script exists"), Route::AllShards(Merge::And));
        for name in [
            "flushall",
            "flushdb",
            "script flush",
            "function flush",
            "config set",
            "config resetstat",
        ] {
            assert_eq!(route(name), Route::Admin(Merge::AllOk), "{name}");
        }
        assert_eq!(route("config get"), Route::Admin(Merge::First));
    }

    #[test]
    fn pubsub_commands() {
        for name in [
            "subscribe",
            "unsubscribe",
            "psubscribe",
            "punsubscribe",
            "ssubscribe",
            "sunsubscribe",
            "publish",
            "spublish",
            "pubsub channels",
            "pubsub numsub",
            "pubsub numpat",
            "pubsub shardchannels",
            "pubsub shardnumsub",
        ] {
            assert_eq!(route(name), Route::PubSub, "{name}");
        }
    }

    #[test]
    fn unsupported_commands() {
        for name in [
            "multi",
            "exec",
            "discard",
            "watch",
            "unwatch",
            "blpop",
            "brpop",
            "blmove",
            "bzpopmin",
            "blmpop",
            "brpoplpush",
            "wait",
            "sync",
            "psync",
            "replicaof",
            "slaveof",
            "shutdown",
            "debug",
            "restore-asking",
            "swapdb",
            "move",
            "migrate",
            "acl setuser",
            "bgsave",
            "role",
        ] {
            assert!(
                matches!(route(name), Route::Unsupported(_)),
                "{name}: {:?}",
                route(name)
            );
        }
    }

    #[test]
    fn fan_out_commands_have_one_plain_key_range() {
        // The splitter relies on keys (MGET, DEL...) or key/value pairs (MSET) from argv[1].
        for c in crate::all()
            .iter()
            .filter(|c| matches!(c.route, Route::FanOut(_)))
        {
            assert_eq!(c.keys.len(), 1, "{}", c.name);
            assert_eq!(c.keys[0].begin, crate::BeginSearch::Index(1), "{}", c.name);
            let step = if c.name == "mset" { 2 } else { 1 };
            assert_eq!(
                c.keys[0].find,
                crate::FindKeys::Range {
                    lastkey: -1,
                    keystep: step,
                    limit: 0
                },
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn read_and_write_follow_redis_flags() {
        assert!(cmd("get").is_read() && !cmd("get").is_write());
        assert!(cmd("set").is_write() && !cmd("set").is_read());
        assert!(cmd("eval_ro").is_read());
        assert!(!cmd("eval").is_read() && !cmd("eval").is_write());
    }
}
