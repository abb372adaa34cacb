//! Redis ACL rules over the command table: parsing a user's rules (Redis' `ACL SETUSER`
//! syntax), checking a call against them, and describing them back as `ACL LIST` does.
//!
//! A user's command permissions are one bit per command and subcommand ([`command_id`]),
//! computed once when the rules are parsed, so a check is a bit test, plus a glob match per
//! key or channel when the user is limited to some. Key patterns and channel patterns use
//! Redis' glob ([`glob_match`]).
//!
//! Supported rules (as in Redis 7.0): `on`, `off`, `nopass`, `resetpass`, `#<sha256 hex>`,
//! `reset`, `allcommands`/`+@all`, `nocommands`/`-@all`, `+@<category>`, `-@<category>`,
//! `+<command>`, `-<command>`, `+<command>|<subcommand>`, `-<command>|<subcommand>`,
//! `allkeys`/`~*`, `resetkeys`, `~<pattern>`, `%R~<pattern>`, `%W~<pattern>`,
//! `%RW~<pattern>`, `allchannels`/`&*`, `resetchannels`, `&<pattern>`,
//! `sanitize-payload`, `skip-sanitize-payload`, `clearselectors`. A clear-text password
//! (`>pass`, `<pass`) is refused: rules are written in configuration files, which hold hashes.
//! Selectors (`(...)`) and first-argument rules of plain commands (`+select|0`) are refused.

use std::sync::OnceLock;

use crate::{lookup, Command, Flags, KeyFlags};

/// Redis' ACL categories, in the order `ACL CAT` lists them.
pub const CATEGORIES: [&str; 21] = [
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Words of a command bit set: room for 512 commands and subcommands (Redis 7.0 has about
/// 400; a test checks the table fits).
const WORDS: usize = 8;

/// One bit per command id.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct Bits([u64; WORDS]);

impl Bits {
    fn get(&self, id: usize) -> bool {
        self.0
            .get(id / 64)
            .is_some_and(|w| w & (1u64 << (id % 64)) != 0)
    }

    fn set(&mut self, id: usize, on: bool) {
        if let Some(w) = self.0.get_mut(id / 64) {
            if on {
                *w |= 1u64 << (id % 64);
            } else {
                *w &= !(1u64 << (id % 64));
            }
        }
    }
}

/// Every command and subcommand by id: top-level commands first (ids `0..all().len()`, the
/// table's order), then each container's subcommands in turn.
struct Ids {
    /// Per top-level command, the id of its first subcommand.
    base: Vec<usize>,
    /// Every entry, indexed by id.
    by_id: Vec<&'static Command>,
    /// Every entry's keys as [`Rules::check`] reads them, indexed by id.
    keys: Vec<Keys>,
}

/// Where a command's keys are, for the ACL check.
#[derive(Debug, Clone, Copy)]
enum Keys {
    /// It names none.
    None,
    /// One key, `argv[1]`, with this access (GET, SET, INCR, ...): the usual shape.
    First(KeyFlags),
    /// Anything else: its key specs are run.
    Specs,
}

fn ids() -> &'static Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    IDS.get_or_init(|| {
        let all = crate::all();
        let mut by_id: Vec<&'static Command> = all.iter().collect();
        let mut base = Vec::with_capacity(all.len());
        for c in all {
            base.push(by_id.len());
            by_id.extend(c.subcommands.iter());
        }
        let keys = by_id
            .iter()
            .map(|c| match one_key_at_1(c) {
                _ if c.keys.is_empty() => Keys::None,
                Some(flags) => Keys::First(flags),
                None => Keys::Specs,
            })
            .collect();
        Ids { base, by_id, keys }
    })
}

/// The position of `c` in `table`, if it is an entry of it (by address, no comparison of
/// names).
#[inline]
fn offset_in(table: &'static [Command], c: &Command) -> Option<usize> {
    let size = std::mem::size_of::<Command>().max(1);
    let i = (c as *const Command as usize).wrapping_sub(table.as_ptr() as usize) / size;
    (i < table.len() && std::ptr::eq(&table[i], c)).then_some(i)
}

/// The ACL id of a command or subcommand of the table (`None` for a `Command` that is not
/// an entry of it). Ids are dense, from 0 to [`command_count`].
#[must_use]
#[inline]
pub fn command_id(cmd: &Command) -> Option<usize> {
    offset_in(crate::all(), cmd).or_else(|| subcommand_id(cmd))
}

/// [`command_id`] of a subcommand.
fn subcommand_id(cmd: &Command) -> Option<usize> {
    let all = crate::all();
    let (parent, _) = cmd.name.split_once('|')?;
    let p = lookup(parent.as_bytes())?;
    let pi = offset_in(all, p)?;
    let j = offset_in(p.subcommands, cmd)?;
    Some(ids().base[pi] + j)
}

/// How many commands and subcommands have an id.
#[must_use]
pub fn command_count() -> usize {
    ids().by_id.len()
}

/// Whether `cmd` is in the category `cat` (without `@`).
fn in_category(cmd: &Command, cat: &str) -> bool {
    cmd.acl_categories
        .iter()
        .any(|c| c.strip_prefix('@') == Some(cat))
}

/// The commands and subcommands of a category (without `@`), as `ACL CAT <category>` lists
/// them (`config|get` for subcommands); `None` for an unknown category.
#[must_use]
pub fn category_commands(cat: &str) -> Option<Vec<&'static str>> {
    let cat = CATEGORIES.iter().find(|c| c.eq_ignore_ascii_case(cat))?;
    Some(
        ids()
            .by_id
            .iter()
            .filter(|c| in_category(c, cat))
            .map(|c| c.name)
            .collect(),
    )
}

/// Redis' glob match (`stringmatchlen`, case-sensitive): `*` any run, `?` one byte,
/// `[abc]`, `[^abc]`, `[a-z]` one byte of a set, `\x` the byte `x`. Runs in
/// O(pattern × text) without recursion, whatever the pattern.
#[must_use]
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the last `*`: the pattern after it and the text it covers to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                while pattern.get(p) == Some(&b'*') {
                    p += 1;
                }
                if p == pattern.len() {
                    return true;
                }
                star = Some((p, t));
                continue;
            }
            Some(_) => {
                if let Some(len) = one(&pattern[p..], text[t]) {
                    p += len;
                    t += 1;
                    continue;
                }
            }
            None => {}
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether the first element of `pattern` (not `*`) matches the byte `c`: the element's
/// length when it does.
fn one(pattern: &[u8], c: u8) -> Option<usize> {
    match pattern[0] {
        b'?' => Some(1),
        b'\\' if pattern.len() >= 2 => (pattern[1] == c).then_some(2),
        b'[' => {
            let mut i = 1;
            let not = pattern.get(1) == Some(&b'^');
            if not {
                i += 1;
            }
            let mut hit = false;
            loop {
                match pattern.get(i) {
                    None => break,
                    Some(b']') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < pattern.len() => {
                        hit |= pattern[i + 1] == c;
                        i += 2;
                    }
                    Some(&a) if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() => {
                        let b = pattern[i + 2];
                        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                        hit |= (lo..=hi).contains(&c);
                        i += 3;
                    }
                    Some(&a) => {
                        hit |= a == c;
                        i += 1;
                    }
                }
            }
            (hit != not).then_some(i)
        }
        other => (other == c).then_some(1),
    }
}

/// A key pattern and the access it grants (`~`: both, `%R~`: read, `%W~`: write).
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPattern {
    pattern: Vec<u8>,
    read: bool,
    write: bool,
    /// The pattern is a literal prefix followed by one `*` (`cache:*`, the usual shape):
    /// matched with a prefix comparison.
    prefix: Option<usize>,
    /// The prefix's first 8 bytes (fewer when shorter) as a little-endian word, and the mask
    /// of those bytes: a key of 8 bytes or more is compared with one load.
    head: u64,
    mask: u64,
}

impl KeyPattern {
    fn new(pattern: Vec<u8>, read: bool, write: bool) -> KeyPattern {
        let prefix = match pattern.split_last() {
            Some((b'*', lit)) if !lit.iter().any(|c| matches!(c, b'*' | b'?' | b'[' | b'\\')) => {
                Some(lit.len())
            }
            _ => None,
        };
        let (mut head, mut mask) = (0, 0);
        if let Some(n) = prefix {
            let mut word = [0u8; 8];
            let m = n.min(8);
            word[..m].copy_from_slice(&pattern[..m]);
            head = u64::from_le_bytes(word);
            mask = if m == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * m)) - 1
            };
        }
        KeyPattern {
            pattern,
            read,
            write,
            prefix,
            head,
            mask,
        }
    }

    #[inline]
    fn matches(&self, key: &[u8]) -> bool {
        match self.prefix {
            Some(n) => {
                if key.len() < n {
                    return false;
                }
                // The usual key (8 bytes or more) against a prefix of up to 8 bytes: one load
                // and compare, no call to `memcmp`.
                if let Some(first) = key.first_chunk::<8>() {
                    if u64::from_le_bytes(*first) & self.mask != self.head {
                        return false;
                    }
                    if n <= 8 {
                        return true;
                    }
                }
                key[..n] == self.pattern[..n]
            }
            None => glob_match(&self.pattern, key),
        }
    }
}

/// Why a rule was refused. `Display` is Redis' `ACL SETUSER` wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Error in ACL SETUSER modifier '{rule}': {reason}")]
pub struct RuleError {
    /// The rule as written.
    pub rule: String,
    /// Redis' description of the problem (or rampart's, for what it does not support).
    pub reason: &'static str,
}

const SYNTAX: &str = "Syntax error";
const UNKNOWN: &str = "Unknown command or category name in ACL";
const AFTER_ALLKEYS: &str = "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns";
const AFTER_ALLCHANNELS: &str = "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels";
const BAD_HASH: &str =
    "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters";
const FIRST_ARG: &str = "Allowing first-arg of a subcommand is not supported";
const CLEAR_PASSWORD: &str = "clear-text passwords are not accepted in rampart's configuration: give the user password_sha256, password_file or password_env (or a #<sha256> rule)";
const NO_SELECTORS: &str = "selectors are not supported by rampart";
const NO_FIRST_ARG: &str = "first-argument rules of plain commands are not supported by rampart";

/// What a call was refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The command (or subcommand) itself.
    Command,
    /// The key at this argv index.
    Key(usize),
    /// The channel at this argv index.
    Channel(usize),
}

/// One user's rules, parsed: flags, password hashes given as `#<hash>` rules, and one
/// selector (commands, key patterns, channel patterns). A new user is `off`, with no
/// password, no command, no key and no channel, as in Redis 7.0.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// `on` (the user may authenticate).
    pub enabled: bool,
    /// `nopass`: any password authenticates the user.
    pub nopass: bool,
    /// SHA-256 hashes of the user's passwords given by `#<hash>` rules.
    pub hashes: Vec<[u8; 32]>,
    /// `skip-sanitize-payload` (shown by `ACL LIST`; RESTORE is checked by the servers).
    pub skip_sanitize: bool,
    commands: Bits,
    /// `+@all` / `allcommands` is in force (no command was removed since).
    all_commands: bool,
    all_keys: bool,
    keys: Vec<KeyPattern>,
    all_channels: bool,
    channels: Vec<Vec<u8>>,
    /// The command rules in force, as written (`+@all` / `-@all` first), for `ACL LIST`.
    command_rules: Vec<String>,
    /// What [`Rules::check`] does for each command id, worked out once the rules are parsed.
    plans: Plans,
}

/// What the ACL check does for one command under one user's rules.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// The command is denied.
    Denied,
    /// Allowed, with no key or channel to check.
    Free,
    /// Allowed; its one key, `argv[1]`, is checked for this access.
    First(KeyFlags),
    /// Allowed; its keys (found by its key specs) and channels are checked.
    Full,
}

/// The plan of every command id (empty until [`Rules::parse`] fills it: the check then takes
/// the full path). Derived from the rules, so it never makes two `Rules` differ.
#[derive(Debug, Clone, Default)]
struct Plans(Box<[Plan]>);

impl PartialEq for Plans {
    fn eq(&self, _: &Plans) -> bool {
        true
    }
}

impl Eq for Plans {}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Password hashes are left out: they must not reach logs.
        f.debug_struct("Rules")
            .field("enabled", &self.enabled)
            .field("nopass", &self.nopass)
            .field("passwords", &self.hashes.len())
            .field("rules", &self.describe_selector())
            .finish()
    }
}

impl Rules {
    /// Parses a rules string: rules separated by spaces, applied in order (later rules win).
    ///
    /// # Errors
    /// The first rule Redis (or rampart) refuses, with its reason in Redis' wording.
    pub fn parse(text: &str) -> Result<Rules, RuleError> {
        let mut r = Rules::default();
        for op in text.split_ascii_whitespace() {
            r.apply(op).map_err(|reason| RuleError {
                // A clear-text password is never repeated back (it would reach logs).
                rule: match op.as_bytes()[0] {
                    c @ (b'>' | b'<') => format!("{}<password>", c as char),
                    _ => op.to_string(),
                },
                reason,
            })?;
        }
        r.plans = r.plans();
        Ok(r)
    }

    /// Every command id's [`Plan`] under these rules.
    fn plans(&self) -> Plans {
        let ids = ids();
        let plan = |(id, c): (usize, &&Command)| {
            if !(self.all_commands || c.flags.contains(Flags::NO_AUTH) || self.commands.get(id)) {
                return Plan::Denied;
            }
            if !self.all_channels && c.flags.contains(Flags::PUBSUB) {
                return Plan::Full;
            }
            match ids.keys[id] {
                _ if self.all_keys => Plan::Free,
                Keys::None => Plan::Free,
                Keys::First(flags) => Plan::First(flags),
                Keys::Specs => Plan::Full,
            }
        };
        Plans(ids.by_id.iter().enumerate().map(plan).collect())
    }

    fn apply(&mut self, op: &str) -> Result<(), &'static str> {
        let lower = op.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.hashes.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.hashes.clear();
            }
            "reset" => *self = Rules::default(),
            "sanitize-payload" => self.skip_sanitize = false,
            "skip-sanitize-payload" => self.skip_sanitize = true,
            "clearselectors" => {}
            "allkeys" | "~*" => {
                self.all_keys = true;
                self.keys.clear();
            }
            "resetkeys" => {
                self.all_keys = false;
                self.keys.clear();
            }
            "allchannels" | "&*" => {
                self.all_channels = true;
                self.channels.clear();
            }
            "resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
            }
            "allcommands" | "+@all" => {
                self.commands = Bits([u64::MAX; WORDS]);
                self.all_commands = true;
                self.command_rules = vec!["+@all".into()];
            }
            "nocommands" | "-@all" => {
                self.commands = Bits::default();
                self.all_commands = false;
                self.command_rules = vec!["-@all".into()];
            }
            _ => return self.apply_pattern_or_command(op),
        }
        Ok(())
    }

    fn apply_pattern_or_command(&mut self, op: &str) -> Result<(), &'static str> {
        let b = op.as_bytes();
        match b[0] {
            b'#' => {
                let hash = parse_hash(&op[1..]).ok_or(BAD_HASH)?;
                if !self.hashes.contains(&hash) {
                    self.hashes.push(hash);
                }
                self.nopass = false;
            }
            b'>' | b'<' => return Err(CLEAR_PASSWORD),
            b'!' => {
                let hash = parse_hash(&op[1..]).ok_or(BAD_HASH)?;
                let before = self.hashes.len();
                self.hashes.retain(|h| *h != hash);
                if self.hashes.len() == before {
                    return Err(
                        "The password you are trying to remove from the user does not exist",
                    );
                }
            }
            b'(' => return Err(NO_SELECTORS),
            b'~' | b'%' => self.key_pattern(op)?,
            b'&' => {
                if self.all_channels {
                    return Err(AFTER_ALLCHANNELS);
                }
                let p = op.as_bytes()[1..].to_vec();
                if !self.channels.contains(&p) {
                    self.channels.push(p);
                }
            }
            b'+' | b'-' => self.command_rule(op)?,
            _ => return Err(SYNTAX),
        }
        Ok(())
    }

    fn key_pattern(&mut self, op: &str) -> Result<(), &'static str> {
        if self.all_keys {
            return Err(AFTER_ALLKEYS);
        }
        let b = op.as_bytes();
        let (mut read, mut write, mut at) = (false, false, 1);
        if b[0] == b'%' {
            loop {
                match b.get(at).map(u8::to_ascii_uppercase) {
                    Some(b'R') if !read => read = true,
                    Some(b'W') if !write => write = true,
                    Some(b'~') => {
                        at += 1;
                        break;
                    }
                    _ => return Err(SYNTAX),
                }
                at += 1;
            }
        } else {
            (read, write) = (true, true);
        }
        let pattern = b[at..].to_vec();
        match self.keys.iter_mut().find(|k| k.pattern == pattern) {
            Some(k) => {
                k.read |= read;
                k.write |= write;
            }
            None => self.keys.push(KeyPattern::new(pattern, read, write)),
        }
        Ok(())
    }

    fn command_rule(&mut self, op: &str) -> Result<(), &'static str> {
        let allow = op.starts_with('+');
        let name = &op[1..];
        if let Some(cat) = name.strip_prefix('@') {
            let cat = CATEGORIES
                .iter()
                .find(|c| c.eq_ignore_ascii_case(cat))
                .ok_or(UNKNOWN)?;
            for (id, c) in ids().by_id.iter().enumerate() {
                if in_category(c, cat) {
                    self.change(c, id, allow);
                }
            }
        } else {
            let cmd = match name.split_once('|') {
                None => lookup(name.as_bytes()).ok_or(UNKNOWN)?,
                Some((parent, sub)) => {
                    let p = lookup(parent.as_bytes()).ok_or(UNKNOWN)?;
                    if sub.contains('|') {
                        return Err(FIRST_ARG);
                    }
                    if sub.is_empty() {
                        return Err(SYNTAX);
                    }
                    if !p.is_container() {
                        return Err(NO_FIRST_ARG);
                    }
                    crate::lookup_sub(p, sub.as_bytes()).ok_or(UNKNOWN)?
                }
            };
            let id = command_id(cmd).ok_or(UNKNOWN)?;
            self.change(cmd, id, allow);
        }
        if !allow {
            self.all_commands = false;
        }
        self.command_rules.push(op.to_ascii_lowercase());
        Ok(())
    }

    /// Allows or denies `cmd` (id `id`) and, for a container, every subcommand.
    fn change(&mut self, cmd: &Command, id: usize, allow: bool) {
        self.commands.set(id, allow);
        for sub in cmd.subcommands {
            if let Some(sid) = command_id(sub) {
                self.commands.set(sid, allow);
            }
        }
    }

    /// The user may run every command and touch every key and channel: checks can be
    /// skipped.
    #[must_use]
    pub fn unrestricted(&self) -> bool {
        self.all_commands && self.all_keys && self.all_channels
    }

    /// Whether the rules allow the command (or subcommand) `cmd` itself.
    #[must_use]
    pub fn allows_command(&self, cmd: &Command) -> bool {
        self.all_commands
            || cmd.flags.contains(Flags::NO_AUTH)
            || command_id(cmd).is_some_and(|id| self.commands.get(id))
    }

    /// An admin user: one whose rules allow every command of `@admin` (so also `+@all`).
    #[must_use]
    pub fn is_admin(&self) -> bool {
        self.all_commands
            || ids()
                .by_id
                .iter()
                .enumerate()
                .filter(|(_, c)| in_category(c, "admin"))
                .all(|(id, _)| self.commands.get(id))
    }

    /// Checks the call `argv` of `cmd` (the subcommand's entry for a container): the
    /// command, then each key (with the access its key spec says) and each channel, as
    /// Redis 7.0 does. `scratch` is reused between calls.
    ///
    /// # Errors
    /// What is denied first ([`Denied`]). A call whose keys cannot be found (a bad key count)
    /// is not denied here: the caller reports that error.
    #[inline]
    pub fn check(
        &self,
        cmd: &Command,
        argv: &[&[u8]],
        scratch: &mut Vec<(usize, KeyFlags)>,
    ) -> Result<(), Denied> {
        // The usual commands take one load of their plan and at most one key comparison;
        // the rest (and rules built without a plan) go through every step.
        match command_id(cmd).and_then(|id| self.plans.0.get(id)) {
            Some(Plan::Free) => Ok(()),
            Some(Plan::Denied) => Err(Denied::Command),
            Some(&Plan::First(spec)) => {
                let flags = if spec.contains(KeyFlags::VARIABLE_FLAGS) {
                    cmd.call_flags(argv, spec)
                } else {
                    spec
                };
                if argv.len() > 1 && !self.key_allowed(argv[1], flags) {
                    Err(Denied::Key(1))
                } else {
                    Ok(())
                }
            }
            Some(Plan::Full) | None => self.check_all(cmd, argv, scratch),
        }
    }

    /// [`Rules::check`] step by step: the command, its keys, its channels.
    fn check_all(
        &self,
        cmd: &Command,
        argv: &[&[u8]],
        scratch: &mut Vec<(usize, KeyFlags)>,
    ) -> Result<(), Denied> {
        // The command's id once, for its rule bit and its key shape.
        let id = command_id(cmd);
        let allowed = self.all_commands
            || cmd.flags.contains(Flags::NO_AUTH)
            || id.is_some_and(|id| self.commands.get(id));
        if !allowed {
            return Err(Denied::Command);
        }
        let keys = match id {
            Some(id) => ids().keys[id],
            None if cmd.keys.is_empty() => Keys::None,
            None => one_key_at_1(cmd).map_or(Keys::Specs, Keys::First),
        };
        if self.all_keys {
            // Nothing to check.
        } else if let Keys::First(spec) = keys {
            // The usual shape (GET, SET, INCR, ...): one key, argv[1].
            let flags = if spec.contains(KeyFlags::VARIABLE_FLAGS) {
                cmd.call_flags(argv, spec)
            } else {
                spec
            };
            if argv.len() > 1 && !self.key_allowed(argv[1], flags) {
                return Err(Denied::Key(1));
            }
        } else if matches!(keys, Keys::None) {
            // No key to check.
        } else if cmd.keys_with_flags(argv, scratch).is_ok() {
            for &(i, flags) in scratch.iter() {
                if !self.key_allowed(argv[i], flags) {
                    return Err(Denied::Key(i));
                }
            }
        }
        if !self.all_channels && cmd.flags.contains(Flags::PUBSUB) {
            let (from, pattern) = match cmd.name {
                "publish" | "spublish" => (1..2.min(argv.len()), false),
                "subscribe" | "ssubscribe" => (1..argv.len(), false),
                "psubscribe" => (1..argv.len(), true),
                _ => (0..0, false),
            };
            for i in from {
                if !self.channel_allowed(argv[i], pattern) {
                    return Err(Denied::Channel(i));
                }
            }
        }
        Ok(())
    }

    /// The user may read every key (`allkeys`, `~*`, `%R~*`), as Redis 7.0 asks of SORT's
    /// BY and GET patterns, which read keys no key spec names.
    #[must_use]
    pub fn reads_every_key(&self) -> bool {
        self.all_keys || self.keys.iter().any(|k| k.read && k.pattern == b"*")
    }

    /// For `SORT` and `SORT_RO` (`argv` from the command name on): Redis 7.0's error when a
    /// user who may not read every key gives a BY pattern with `*` (without one, BY only
    /// skips sorting) or a GET option. Options are read as Redis reads them, up to the
    /// first it would call a syntax error (the server reports that one).
    #[must_use]
    pub fn sort_refusal(&self, argv: &[&[u8]]) -> Option<&'static str> {
        if self.reads_every_key() {
            return None;
        }
        let mut j = 2;
        while let Some(a) = argv.get(j) {
            let left = argv.len() - j - 1;
            let is = |w: &[u8]| a.eq_ignore_ascii_case(w);
            if is(b"asc") || is(b"desc") || is(b"alpha") {
                j += 1;
            } else if is(b"limit") && left >= 2 {
                j += 3;
            } else if is(b"store") && left >= 1 {
                j += 2;
            } else if is(b"by") && left >= 1 {
                if argv[j + 1].contains(&b'*') {
                    return Some(
                        "ERR BY option of SORT denied due to insufficient ACL permissions.",
                    );
                }
                j += 2;
            } else if is(b"get") && left >= 1 {
                return Some("ERR GET option of SORT denied due to insufficient ACL permissions.");
            } else {
                return None;
            }
        }
        None
    }

    #[inline]
    fn key_allowed(&self, key: &[u8], flags: KeyFlags) -> bool {
        let read = flags.contains(KeyFlags::ACCESS);
        let write = flags.contains(KeyFlags::INSERT)
            || flags.contains(KeyFlags::DELETE)
            || flags.contains(KeyFlags::UPDATE);
        for k in &self.keys {
            if (k.read || !read) && (k.write || !write) && k.matches(key) {
                return true;
            }
        }
        false
    }

    /// A channel (`pattern`: false) matches an allowed pattern as a glob; a PSUBSCRIBE
    /// pattern must be one of the allowed patterns, literally.
    #[must_use]
    pub fn channel_allowed(&self, channel: &[u8], pattern: bool) -> bool {
        self.all_channels
            || self.channels.iter().any(|p| {
                if pattern {
                    p == channel
                } else {
                    glob_match(p, channel)
                }
            })
    }

    /// The flags as Redis 7.0's `ACL GETUSER` lists them: `on` or `off`, then `nopass` and
    /// `skip-sanitize-payload` when set.
    #[must_use]
    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        if self.skip_sanitize {
            f.push("skip-sanitize-payload");
        }
        f
    }

    /// The command rules in force (`ACL GETUSER`'s `commands`): `+@all` or `-@all`, then the
    /// later rules as written.
    #[must_use]
    pub fn commands_text(&self) -> String {
        if self.command_rules.is_empty() {
            return "-@all".into();
        }
        let mut t = String::new();
        if !matches!(self.command_rules[0].as_str(), "+@all" | "-@all") {
            t.push_str("-@all ");
        }
        t.push_str(&self.command_rules.join(" "));
        t
    }

    /// The key patterns (`ACL GETUSER`'s `keys`): `~*`, or each as `~p`, `%R~p`, `%W~p`.
    #[must_use]
    pub fn keys_text(&self) -> String {
        if self.all_keys {
            return "~*".into();
        }
        let parts: Vec<String> = self
            .keys
            .iter()
            .map(|k| {
                let pat = String::from_utf8_lossy(&k.pattern);
                match (k.read, k.write) {
                    (true, true) => format!("~{pat}"),
                    (true, false) => format!("%R~{pat}"),
                    _ => format!("%W~{pat}"),
                }
            })
            .collect();
        parts.join(" ")
    }

    /// The channel patterns (`ACL GETUSER`'s `channels`): `&*`, or each as `&p`.
    #[must_use]
    pub fn channels_text(&self) -> String {
        if self.all_channels {
            return "&*".into();
        }
        let parts: Vec<String> = self
            .channels
            .iter()
            .map(|c| format!("&{}", String::from_utf8_lossy(c)))
            .collect();
        parts.join(" ")
    }

    /// Keys, channels and commands as `ACL LIST` writes a selector.
    fn describe_selector(&self) -> String {
        let mut t = String::new();
        let keys = self.keys_text();
        if !keys.is_empty() {
            t.push_str(&keys);
            t.push(' ');
        }
        if !self.all_channels {
            t.push_str("resetchannels ");
        }
        let channels = self.channels_text();
        if !channels.is_empty() {
            t.push_str(&channels);
            t.push(' ');
        }
        t.push_str(&self.commands_text());
        t
    }

    /// The user's line in `ACL LIST` after `user <name> `: flags, `#<hash>` of each password
    /// (as Redis shows them), keys, channels, commands. `extra_hashes` are the user's other
    /// password hashes (from rampart's configuration keys).
    #[must_use]
    pub fn describe(&self, extra_hashes: &[[u8; 32]]) -> String {
        let mut t = String::from(if self.enabled { "on " } else { "off " });
        if self.nopass {
            t.push_str("nopass ");
        }
        if self.skip_sanitize {
            t.push_str("skip-sanitize-payload ");
        }
        for h in extra_hashes.iter().chain(&self.hashes) {
            t.push('#');
            t.push_str(&hex(h));
            t.push(' ');
        }
        t.push_str(&self.describe_selector());
        t
    }
}

/// The spec flags of `cmd`'s only key when it is always `argv[1]`.
#[inline]
fn one_key_at_1(cmd: &Command) -> Option<KeyFlags> {
    match cmd.keys {
        [spec]
            if spec.begin == crate::BeginSearch::Index(1)
                && matches!(
                    spec.find,
                    crate::FindKeys::Range {
                        lastkey: 0,
                        keystep: 1,
                        ..
                    }
                )
                && !spec.flags.contains(KeyFlags::NOT_KEY)
                && !matches!(cmd.name, "sort" | "migrate") =>
        {
            Some(spec.flags)
        }
        _ => None,
    }
}

/// Lowercase hex of a hash, as Redis shows password hashes.
#[must_use]
pub fn hex(h: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(64);
    for b in h {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A SHA-256 hash written as Redis' ACL `#<hash>`: exactly 64 lowercase hex digits.
#[must_use]
pub fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(name: &str) -> &'static Command {
        let (p, s) = match name.split_once(' ') {
            Some((p, s)) => (p, Some(s)),
            None => (name, None),
        };
        let c = lookup(p.as_bytes()).expect("command");
        s.map_or(c, |s| crate::lookup_sub(c, s.as_bytes()).expect("sub"))
    }

    fn check(r: &Rules, call: &str) -> Result<(), Denied> {
        let argv: Vec<&[u8]> = call.split(' ').map(str::as_bytes).collect();
        let c = crate::lookup_argv(&argv).expect("call");
        r.check(c, &argv, &mut Vec::new())
    }

    #[test]
    fn sort_patterns_need_every_key_readable() {
        let refusal = |rules: &str, call: &str| {
            let argv: Vec<&[u8]> = call.split(' ').map(str::as_bytes).collect();
            Rules::parse(rules).expect("rules").sort_refusal(&argv)
        };
        let some = "on +@all ~cache:*";
        assert!(refusal(some, "sort k GET #").is_some_and(|e| e.starts_with("ERR GET")));
        assert!(refusal(some, "sort k LIMIT 0 1 BY w:*").is_some_and(|e| e.starts_with("ERR BY")));
        assert_eq!(
            refusal(some, "sort k BY nosort ALPHA DESC STORE cache:d"),
            None
        );
        // Past a word Redis calls a syntax error, the server answers.
        assert_eq!(refusal(some, "sort k NOSUCH GET #"), None);
        for every in ["on +@all ~*", "on +@all allkeys", "on +@all %R~* ~cache:*"] {
            assert_eq!(refusal(every, "sort k BY w:* GET #"), None, "{every}");
        }
        assert!(refusal("on +@all %W~*", "sort k GET #").is_some());
    }

    /// The per-command plans answer every command and argument shape exactly as the full
    /// check does, under rules of each kind (command bits, key patterns of each access and
    /// shape, channels, the `allkeys` / `allchannels` short cuts).
    #[test]
    fn the_planned_check_answers_as_the_full_check() {
        let rules = [
            "on +@all ~cache:* ~key:* &*",
            "on +@read +@write -@dangerous ~key:* %R~ro:* %W~wo:* &chan:*",
            "on +@all allkeys resetchannels",
            "on -@all +get +set +subscribe +publish ~k?y:* ~{tag}* &news",
            "on +@all -set ~* &*",
            "on +@all ~verylongprefix:* ~a*",
        ];
        let args: [&[&[u8]]; 7] = [
            &[],
            &[b"key:1"],
            &[b"cache:1", b"v"],
            &[b"k"],
            &[b"ro:1", b"wo:1", b"x", b"key:2"],
            &[b"verylongprefix:abc", b"GET"],
            &[b"news", b"chan:a", b"other"],
        ];
        for text in rules {
            let r = Rules::parse(text).expect("rules");
            assert!(!r.plans.0.is_empty());
            for c in crate::all()
                .iter()
                .flat_map(|c| std::iter::once(c).chain(c.subcommands))
            {
                for rest in args {
                    let mut argv: Vec<&[u8]> = vec![c.name.as_bytes()];
                    argv.extend_from_slice(rest);
                    let planned = r.check(c, &argv, &mut Vec::new());
                    let full = r.check_all(c, &argv, &mut Vec::new());
                    assert_eq!(planned, full, "{text}: {} {:?}", c.name, rest);
                }
            }
        }
    }

    #[test]
    fn a_prefix_pattern_matches_keys_shorter_and_longer_than_a_word() {
        let r = Rules::parse("on +@all ~ab:* ~verylongprefix:*").expect("rules");
        for (key, ok) in [
            (&b"ab:"[..], true),
            (b"ab:1", true),
            (b"ab:12345678", true),
            (b"ab", false),
            (b"abc:1234567", false),
            (b"verylongprefix:", true),
            (b"verylongprefix:x", true),
            (b"verylongprefiX:x", false),
            (b"verylong", false),
            (b"", false),
        ] {
            let got = r.check(cmd("get"), &[b"get", key], &mut Vec::new()).is_ok();
            assert_eq!(got, ok, "{:?}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn every_command_has_a_distinct_id_within_the_bit_set() {
        let n = command_count();
        assert!(n <= WORDS * 64, "{n} commands");
        let mut seen = vec![false; n];
        for c in crate::all()
            .iter()
            .flat_map(|c| std::iter::once(c).chain(c.subcommands))
        {
            let id = command_id(c).expect(c.name);
            assert!(!seen[id], "{}", c.name);
            seen[id] = true;
        }
        assert!(seen.iter().all(|&s| s));
        let copy = *cmd("get");
        assert_eq!(command_id(&copy), None);
    }

    #[test]
    fn glob_follows_redis() {
        for (p, t, m) in [
            ("cache:*", "cache:1", true),
            ("cache:*", "cache:", true),
            ("cache:*", "cach", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("h[ae]llo", "hello", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*a*b*c*", "xaybzc", true),
            ("*a*b*c*", "xaybz", false),
            (
                "a*a*a*a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ] {
            assert_eq!(glob_match(p.as_bytes(), t.as_bytes()), m, "{p} {t}");
        }
    }

    #[test]
    fn categories_commands_and_subcommands() {
        let r = Rules::parse("on +@read -get ~* &*").expect("rules");
        assert_eq!(check(&r, "mget a b"), Ok(()));
        assert_eq!(check(&r, "get a"), Err(Denied::Command));
        assert_eq!(check(&r, "set a 1"), Err(Denied::Command));
        assert_eq!(check(&r, "auth x"), Ok(()), "no_auth commands always run");
        let r = Rules::parse("+config|get").expect("rules");
        assert!(r.allows_command(cmd("config get")));
        assert!(!r.allows_command(cmd("config set")));
        let r = Rules::parse("+config -config|set").expect("rules");
        assert!(r.allows_command(cmd("config get")));
        assert!(!r.allows_command(cmd("config set")));
        assert!(Rules::parse("+@all").expect("all").is_admin());
        assert!(Rules::parse("+@admin").expect("admin").is_admin());
        assert!(!Rules::parse("+@admin -debug").expect("admin").is_admin());
        assert!(!Rules::parse("+@read").expect("read").is_admin());
    }

    #[test]
    fn keys_by_access() {
        let r = Rules::parse("+@all ~cache:* %R~ro:* %W~wo:*").expect("rules");
        assert_eq!(check(&r, "get cache:1"), Ok(()));
        assert_eq!(check(&r, "get other"), Err(Denied::Key(1)));
        assert_eq!(check(&r, "mset cache:1 a other b"), Err(Denied::Key(3)));
        assert_eq!(check(&r, "get ro:1"), Ok(()));
        assert_eq!(check(&r, "set ro:1 x"), Err(Denied::Key(1)));
        assert_eq!(check(&r, "set wo:1 x"), Ok(()));
        assert_eq!(check(&r, "get wo:1"), Err(Denied::Key(1)));
        assert_eq!(check(&r, "set wo:1 x GET"), Err(Denied::Key(1)));
        assert_eq!(check(&r, "bitfield ro:1 GET u8 0"), Ok(()));
        assert_eq!(check(&r, "bitfield ro:1 SET u8 0 1"), Err(Denied::Key(1)));
        assert_eq!(check(&r, "lmove cache:1 wo:1 left right"), Ok(()));
        assert_eq!(check(&r, "lmove ro:1 wo:1 left right"), Err(Denied::Key(1)));
        assert_eq!(check(&r, "eval s 2 cache:a x"), Err(Denied::Key(4)));
        assert_eq!(check(&r, "ping"), Ok(()));
    }

    #[test]
    fn channels_as_redis_7_0() {
        let r = Rules::parse("+@all ~* &chan:* &news").expect("rules");
        assert_eq!(check(&r, "publish chan:1 m"), Ok(()));
        assert_eq!(check(&r, "publish other m"), Err(Denied::Channel(1)));
        assert_eq!(check(&r, "subscribe news chan:x"), Ok(()));
        assert_eq!(check(&r, "subscribe news x"), Err(Denied::Channel(2)));
        assert_eq!(check(&r, "psubscribe chan:*"), Ok(()));
        assert_eq!(check(&r, "psubscribe chan:1*"), Err(Denied::Channel(1)));
        assert_eq!(check(&r, "ssubscribe chan:1"), Ok(()), "not a key");
        assert_eq!(check(&r, "unsubscribe x"), Ok(()));
        let none = Rules::parse("+@all ~*").expect("rules");
        assert_eq!(check(&none, "publish a m"), Err(Denied::Channel(1)));
    }

    #[test]
    fn errors_use_redis_words() {
        let e = |t: &str| Rules::parse(t).expect_err(t).to_string();
        assert_eq!(
            e("+nosuch"),
            "Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL"
        );
        assert_eq!(
            e("on +@nosuch"),
            "Error in ACL SETUSER modifier '+@nosuch': Unknown command or category name in ACL"
        );
        assert!(e("bogus").ends_with("Syntax error"));
        assert!(e("%X~a").ends_with("Syntax error"));
        assert!(e("~* ~a").contains("'allkeys'"));
        assert!(e("&* &a").contains("'allchannels'"));
        assert!(e("#abc").contains("exactly 64"));
        assert!(e(">secret").contains("password_sha256"));
        assert!(
            !e(">secret").contains("secret'"),
            "the password is not echoed back"
        );
        assert!(e("+config|get|x").ends_with(FIRST_ARG));
        assert!(e("+select|0").contains("not supported"));
        assert!(e("(+get ~x)").contains("selectors"));
    }

    #[test]
    fn describes_as_acl_list() {
        let h = [0xabu8; 32];
        let r = Rules::parse(&format!("on #{} ~cache:* &ch +@read -get", hex(&h))).expect("r");
        assert_eq!(
            r.describe(&[]),
            format!(
                "on #{} ~cache:* resetchannels &ch -@all +@read -get",
                hex(&h)
            )
        );
        let all = Rules::parse("on nopass allkeys allchannels allcommands").expect("all");
        assert_eq!(all.describe(&[]), "on nopass ~* &* +@all");
        assert!(all.unrestricted());
        assert_eq!(
            Rules::parse("").expect("empty").describe(&[]),
            "off resetchannels -@all"
        );
        assert_eq!(parse_hash(&hex(&h)), Some(h));
        assert_eq!(parse_hash(&hex(&h).to_uppercase()), None);
    }

    #[test]
    fn category_listing() {
        let read = category_commands("read").expect("read");
        assert!(
            read.contains(&"get")
                && read.contains(&"config|get") == in_category(cmd("config get"), "read")
        );
        assert!(category_commands("nosuch").is_none());
    }
}
