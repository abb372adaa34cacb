//! rampart's routing class for every command: the one hand-written part of the table.
//!
//! The generated table calls [`of`] for each entry at compile time. The decision is made from
//! Redis' own flags, with the exceptions listed by name in [`EXCEPTIONS`]:
//!
//! 1. a name in [`EXCEPTIONS`] gets the class written there;
//! 2. `pubsub` commands are unsupported (subscriptions need a dedicated connection);
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
//! `CLIENT SETNAME/GETNAME/ID`, `RESET`, `SELECT` and `INFO`.

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
const REPLICATION: &str = "replication commands are not supported by the proxy";
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
    ("time", Route::Keys),
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
    // Refused although the flags alone would allow them.
    ("multi", Route::Unsupported(TRANSACTION)),
    ("exec", Route::Unsupported(TRANSACTION)),
    ("discard", Route::Unsupported(TRANSACTION)),
    ("watch", Route::Unsupported(TRANSACTION)),
    ("unwatch", Route::Unsupported(TRANSACTION)),
    ("wait", Route::Unsupported(REPLICATION)),
    ("move", Route::Unsupported(DATABASES)),
    ("swapdb", Route::Unsupported(DATABASES)),
    ("migrate", Route::Unsupported("MIGRATE is not supported by the proxy")),
    ("restore-asking", Route::Unsupported(CLUSTER)),
    ("asking", Route::Unsupported(CLUSTER)),
    ("readonly", Route::Unsupported(CLUSTER)),
    ("readwrite", Route::Unsupported(CLUSTER)),
    ("script|kill", Route::Unsupported("SCRIPT KILL is not supported by the proxy")),
    ("function|kill", Route::Unsupported("FUNCTION KILL is not supported by the proxy")),
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
    if flags.contains(Flags::PUBSUB) {
        return Route::Unsupported("pub/sub is not supported by the proxy");
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
