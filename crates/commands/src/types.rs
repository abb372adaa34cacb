//! The data types of the command table: flag sets, key specs and documented arguments.
//!
//! They mirror the fields Redis reports in `COMMAND INFO` and `COMMAND DOCS`, so the table can
//! answer those commands byte for byte.

/// Declares a flag set: a `u32` newtype with one constant per flag and the flag names in the
/// order Redis prints them (which is also bit order).
macro_rules! flag_set {
    ($(#[$doc:meta])* $ty:ident { $($(#[$fdoc:meta])* $flag:ident = $bit:literal => $name:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $ty(u32);

        impl $ty {
            /// No flag set.
            pub const EMPTY: $ty = $ty(0);
            $($(#[$fdoc])* pub const $flag: $ty = $ty(1 << $bit);)*
            /// Every flag with its Redis name, in the order Redis prints them.
            pub const NAMES: &'static [($ty, &'static str)] = &[$(($ty::$flag, $name)),*];

            /// Both sets together.
            #[must_use]
            pub const fn union(self, other: $ty) -> $ty {
                $ty(self.0 | other.0)
            }

            /// True when every flag of `other` is set in `self`.
            #[must_use]
            pub const fn contains(self, other: $ty) -> bool {
                self.0 & other.0 == other.0
            }

            /// True when no flag is set.
            #[must_use]
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// The raw bits.
            #[must_use]
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// The Redis names of the flags that are set, in Redis' order.
            pub fn names(self) -> impl Iterator<Item = &'static str> + Clone {
                Self::NAMES.iter().filter(move |(f, _)| self.contains(*f)).map(|(_, n)| *n)
            }
        }

        impl core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_set().entries(self.names()).finish()
            }
        }
    };
}

flag_set! {
    /// Command flags, as in the third field of `COMMAND INFO`.
    Flags {
        /// May modify the data set.
        WRITE = 0 => "write",
        /// Only reads data: may be served by a replica.
        READONLY = 1 => "readonly",
        /// May grow memory use; refused when Redis is over `maxmemory`.
        DENYOOM = 2 => "denyoom",
        /// Implemented by a module.
        MODULE = 3 => "module",
        /// Administrative command.
        ADMIN = 4 => "admin",
        /// Publish/subscribe command.
        PUBSUB = 5 => "pubsub",
        /// Not allowed inside scripts.
        NOSCRIPT = 6 => "noscript",
        /// May block the connection.
        BLOCKING = 7 => "blocking",
        /// Allowed while the data set is loading.
        LOADING = 8 => "loading",
        /// Allowed on a replica with stale data.
        STALE = 9 => "stale",
        /// Not shown by `MONITOR`.
        SKIP_MONITOR = 10 => "skip_monitor",
        /// Not recorded in the slow log.
        SKIP_SLOWLOG = 11 => "skip_slowlog",
        /// Allowed on an importing cluster slot after `ASKING`.
        ASKING = 12 => "asking",
        /// O(1) or O(log N).
        FAST = 13 => "fast",
        /// Allowed before authentication.
        NO_AUTH = 14 => "no_auth",
        /// May be called without any key.
        NO_MANDATORY_KEYS = 15 => "no_mandatory_keys",
        /// Refused during asynchronous loading.
        NO_ASYNC_LOADING = 16 => "no_async_loading",
        /// Not allowed inside `MULTI`.
        NO_MULTI = 17 => "no_multi",
        /// Key positions depend on the arguments.
        MOVABLEKEYS = 18 => "movablekeys",
        /// Allowed while a script or function is busy.
        ALLOW_BUSY = 19 => "allow_busy",
    }
}

flag_set! {
    /// Key spec flags (`flags` of a key spec in `COMMAND INFO`).
    KeyFlags {
        /// Read-only access to the key.
        RO = 0 => "RO",
        /// Read-write access.
        RW = 1 => "RW",
        /// Overwrite: the old value is not read.
        OW = 2 => "OW",
        /// The key is deleted.
        RM = 3 => "RM",
        /// The value is returned or used.
        ACCESS = 4 => "access",
        /// The value is updated.
        UPDATE = 5 => "update",
        /// Data is added.
        INSERT = 6 => "insert",
        /// Data is removed.
        DELETE = 7 => "delete",
        /// The argument is not really a key (e.g. a shard channel).
        NOT_KEY = 8 => "not_key",
        /// The spec may miss keys: a command-specific parser is needed.
        INCOMPLETE = 9 => "incomplete",
        /// The flags depend on the arguments.
        VARIABLE_FLAGS = 10 => "variable_flags",
    }
}

flag_set! {
    /// Flags of a documented argument.
    ArgFlags {
        /// The argument may be omitted.
        OPTIONAL = 0 => "optional",
        /// The argument may repeat.
        MULTIPLE = 1 => "multiple",
        /// The argument repeats together with its token.
        MULTIPLE_TOKEN = 2 => "multiple_token",
    }
}

flag_set! {
    /// Documentation flags of a command (`doc_flags` in `COMMAND DOCS`).
    DocFlags {
        /// The command is deprecated.
        DEPRECATED = 0 => "deprecated",
        /// A system command, not meant for clients.
        SYSCMD = 1 => "syscmd",
    }
}

/// One key specification: where the keys of a command start and how to find the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Free-text notes from Redis (empty when none).
    pub notes: &'static str,
    /// How the command uses these keys.
    pub flags: KeyFlags,
    /// Where the search for the first key begins.
    pub begin: BeginSearch,
    /// How the keys are found from there.
    pub find: FindKeys,
}

/// The `begin_search` part of a key spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// The first key is at this argv index.
    Index(i32),
    /// The first key follows `keyword`, searched from `startfrom` (negative: from the end, backwards).
    Keyword {
        /// The keyword, matched case-insensitively.
        keyword: &'static str,
        /// Where the search starts.
        startfrom: i32,
    },
    /// Only a command-specific parser can tell.
    Unknown,
}

/// The `find_keys` part of a key spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys from the begin index to `lastkey` (relative; negative counts from the end), every
    /// `keystep` arguments. A non-zero `limit` with a negative `lastkey` keeps only 1/`limit` of
    /// the remaining arguments (e.g. `XREAD STREAMS k1 k2 id1 id2`).
    Range {
        /// Last key, relative to the first (negative: from the end of argv).
        lastkey: i32,
        /// Distance between keys.
        keystep: i32,
        /// Divisor of the remaining arguments when `lastkey` is negative (0 = none).
        limit: i32,
    },
    /// The number of keys is an argument (e.g. `EVAL script numkeys ...`).
    KeyNum {
        /// Index of the count, relative to the begin index.
        keynumidx: i32,
        /// Index of the first key, relative to the begin index.
        firstkey: i32,
        /// Distance between keys.
        keystep: i32,
    },
    /// Only a command-specific parser can tell.
    Unknown,
}

/// The type of a documented argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    /// A string.
    String,
    /// An integer.
    Integer,
    /// A floating point number.
    Double,
    /// A key name.
    Key,
    /// A glob-style pattern.
    Pattern,
    /// A Unix timestamp.
    UnixTime,
    /// A token with no value.
    PureToken,
    /// One of the nested arguments.
    OneOf,
    /// A group of nested arguments.
    Block,
}

impl ArgType {
    /// The name Redis uses in `COMMAND DOCS`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            ArgType::String => "string",
            ArgType::Integer => "integer",
            ArgType::Double => "double",
            ArgType::Key => "key",
            ArgType::Pattern => "pattern",
            ArgType::UnixTime => "unix-time",
            ArgType::PureToken => "pure-token",
            ArgType::OneOf => "oneof",
            ArgType::Block => "block",
        }
    }
}

/// One documented argument of a command (`arguments` in `COMMAND DOCS`). `None` stands for a
/// field Redis does not report (which differs from an empty one: MIGRATE's `""` token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    /// Argument name.
    pub name: &'static str,
    /// Argument type.
    pub kind: ArgType,
    /// Display text, if different from the name.
    pub display_text: Option<&'static str>,
    /// Index into the command's key specs for key arguments, else -1.
    pub key_spec_index: i32,
    /// The literal token that introduces the argument.
    pub token: Option<&'static str>,
    /// Short description.
    pub summary: Option<&'static str>,
    /// Redis version that added it.
    pub since: Option<&'static str>,
    /// Redis version that deprecated it.
    pub deprecated_since: Option<&'static str>,
    /// Optional / multiple flags.
    pub flags: ArgFlags,
    /// Nested arguments of a `oneof` or `block`.
    pub args: &'static [Arg],
}
