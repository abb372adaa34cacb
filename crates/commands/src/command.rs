//! One entry of the command table and the checks a proxy runs before routing a call.

use crate::{lookup, lookup_sub, Arg, ArgFlags, ArgType, DocFlags, Flags, KeySpec, Route};

/// One Redis command or subcommand, as Redis describes it, plus rampart's [`Route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// Lowercase name; `container|sub` for subcommands (`config|get`).
    pub name: &'static str,
    /// Redis arity: the exact argc when positive, at least `-arity` when negative. argc counts
    /// the command name (and the subcommand name for subcommands).
    pub arity: i32,
    /// Redis command flags.
    pub flags: Flags,
    /// What the proxy does with it (from the hand-written [`crate::class`] table).
    pub route: Route,
    /// Legacy first key position (0: none).
    pub first_key: i32,
    /// Legacy last key position (negative: from the end).
    pub last_key: i32,
    /// Legacy key step.
    pub key_step: i32,
    /// ACL categories, with their `@`.
    pub acl_categories: &'static [&'static str],
    /// Command tips (`request_policy:...`, `nondeterministic_output`, ...).
    pub tips: &'static [&'static str],
    /// Key specifications; see [`Command::key_indices`].
    pub keys: &'static [KeySpec],
    /// One-line description.
    pub summary: &'static str,
    /// Redis version that added it.
    pub since: &'static str,
    /// Documentation group (`string`, `server`, ...).
    pub group: &'static str,
    /// Time complexity text (empty when Redis gives none).
    pub complexity: &'static str,
    /// Deprecated / system command.
    pub doc_flags: DocFlags,
    /// Redis version that deprecated it (empty when not deprecated).
    pub deprecated_since: &'static str,
    /// What replaces it, when deprecated.
    pub replaced_by: &'static str,
    /// `(version, change)` pairs.
    pub history: &'static [(&'static str, &'static str)],
    /// Documented arguments.
    pub arguments: &'static [Arg],
    /// Subcommands of a container command (`CONFIG`, `CLIENT`, ...), sorted by name.
    pub subcommands: &'static [Command],
}

impl Command {
    /// True for commands that only read data (`readonly` flag): replicas may serve them.
    #[must_use]
    pub const fn is_read(&self) -> bool {
        self.flags.contains(Flags::READONLY)
    }

    /// True for commands that may modify data (`write` flag): they must reach the primary.
    #[must_use]
    pub const fn is_write(&self) -> bool {
        self.flags.contains(Flags::WRITE)
    }

    /// True for container commands, whose real entry is a subcommand.
    #[must_use]
    pub const fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// True when a call may name no key at all (`EVAL script 0`); the proxy then picks a shard.
    #[must_use]
    pub const fn keys_optional(&self) -> bool {
        self.flags.contains(Flags::NO_MANDATORY_KEYS)
    }

    /// Whether `argc` arguments (command name included) satisfy the arity.
    #[must_use]
    pub const fn check_arity(&self, argc: usize) -> bool {
        let arity = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 {
            argc == arity
        } else {
            argc >= arity
        }
    }

    /// Resolves a container command to its subcommand entry using `argv[1]` (case-insensitive).
    /// Returns `self` for plain commands, and for a container called without a subcommand
    /// (whose arity check then fails, as in Redis; `COMMAND` alone is valid).
    ///
    /// # Errors
    /// [`CommandError::UnknownSubcommand`] when `argv[1]` is not a subcommand of `self`.
    pub fn resolve<A: AsRef<[u8]>>(
        &'static self,
        argv: &[A],
    ) -> Result<&'static Command, CommandError> {
        if !self.is_container() {
            return Ok(self);
        }
        let Some(sub) = argv.get(1) else {
            return Ok(self);
        };
        lookup_sub(self, sub.as_ref()).ok_or_else(|| CommandError::UnknownSubcommand {
            sub: printable(sub.as_ref(), 128),
            container: self.name.to_ascii_uppercase(),
        })
    }

    /// Whether this call would block the connection, and why: a command Redis flags
    /// `blocking` that has no `BLOCK` option (BLPOP, BZPOPMIN, ...) always blocks; one with a
    /// `BLOCK` option (XREAD, XREADGROUP) blocks only when the call gives it. The options are
    /// read by the command's documented argument layout, so option values that happen to spell
    /// `BLOCK` or `STREAMS` (a group or consumer name) are never taken for keywords.
    #[must_use]
    pub fn blocking<A: AsRef<[u8]>>(&self, argv: &[A]) -> Option<Blocking> {
        if !self.flags.contains(Flags::BLOCKING) {
            return None;
        }
        if !self.arguments.iter().any(|a| a.token == Some("BLOCK")) {
            return Some(Blocking::Always);
        }
        let mut i = 1;
        while let Some(word) = argv.get(i) {
            let word = word.as_ref();
            let Some(arg) = self.arguments.iter().find(|a| {
                a.token
                    .is_some_and(|t| word.eq_ignore_ascii_case(t.as_bytes()))
            }) else {
                // A positional argument: it takes this one word.
                i += 1;
                continue;
            };
            if arg.token == Some("BLOCK") {
                return Some(Blocking::BlockOption);
            }
            match values(arg) {
                Some(n) => i += 1 + n,
                // The rest of the call belongs to this argument (STREAMS key... id...).
                None => return None,
            }
        }
        None
    }

    /// True when this call would block the connection (see [`Command::blocking`]).
    #[must_use]
    pub fn blocks<A: AsRef<[u8]>>(&self, argv: &[A]) -> bool {
        self.blocking(argv).is_some()
    }
}

/// Why a call would block its connection (see [`Command::blocking`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// The command always blocks (BLPOP, BRPOPLPUSH, BZMPOP, ...).
    Always,
    /// The call gives the command's `BLOCK` option (XREAD, XREADGROUP).
    BlockOption,
}

/// How many words follow the token of a documented option, or `None` when it takes the rest
/// of the call (an argument that may repeat).
fn values(arg: &Arg) -> Option<usize> {
    if arg.flags.contains(ArgFlags::MULTIPLE) || arg.flags.contains(ArgFlags::MULTIPLE_TOKEN) {
        return None;
    }
    match arg.kind {
        ArgType::PureToken => Some(0),
        ArgType::Block => arg.args.iter().try_fold(0, |n, a| {
            let own = usize::from(a.token.is_some());
            values(a).map(|v| n + own + v)
        }),
        _ => Some(1),
    }
}

/// Why a call cannot be matched to a table entry. `Display` is the Redis error text without
/// the `ERR ` prefix; any CR/LF from client input has been replaced by spaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The request has no arguments at all.
    #[error("empty command")]
    Empty,
    /// `argv[0]` is not a Redis command.
    #[error("unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand {
        /// The name as sent (truncated, sanitized).
        name: String,
        /// The first arguments, each quoted and followed by a space, as Redis prints them.
        args: String,
    },
    /// `argv[1]` is not a subcommand of the container.
    #[error("unknown subcommand '{sub}'. Try {container} HELP.")]
    UnknownSubcommand {
        /// The subcommand as sent (truncated, sanitized).
        sub: String,
        /// The container name, uppercase.
        container: String,
    },
    /// argc does not satisfy the arity.
    #[error("wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
}

/// Looks up a whole call: the command, its subcommand for containers, and the arity check.
///
/// # Errors
/// A [`CommandError`] worded as Redis words it for an unknown command or subcommand or a wrong
/// number of arguments.
pub fn lookup_argv<A: AsRef<[u8]>>(argv: &[A]) -> Result<&'static Command, CommandError> {
    let first = argv.first().ok_or(CommandError::Empty)?.as_ref();
    let Some(cmd) = lookup(first) else {
        let mut args = String::new();
        for a in argv.iter().skip(1) {
            if args.len() >= 128 {
                break;
            }
            let room = 128 - args.len();
            args.push('\'');
            args.push_str(&printable(a.as_ref(), room));
            args.push_str("' ");
        }
        return Err(CommandError::UnknownCommand {
            name: printable(first, 128),
            args,
        });
    };
    let cmd = cmd.resolve(argv)?;
    if cmd.check_arity(argv.len()) {
        Ok(cmd)
    } else {
        Err(CommandError::WrongArity(cmd.name))
    }
}

/// At most `max` bytes of client input, safe inside a one-line error reply.
fn printable(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    String::from_utf8_lossy(cut).replace(['\r', '\n'], " ")
}
