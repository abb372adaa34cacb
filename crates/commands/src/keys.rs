//! Key positions of one call, computed from the command's key specs.
//!
//! This follows Redis' own reading of key specs (`begin_search` then `find_keys`), plus the two
//! commands whose specs cannot describe them: `SORT` (a `STORE` key anywhere after the `BY`,
//! `GET` and `LIMIT` options) and `MIGRATE` (the `KEYS` option).

use crate::{BeginSearch, Command, FindKeys, KeyFlags};

/// Why the keys of a call could not be found. `Display` is Redis' wording for the same mistake,
/// without the `ERR ` prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key count is not an integer.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// The key count is negative (scripts and functions).
    #[error("Number of keys can't be negative")]
    NegativeKeys,
    /// The key count is larger than the arguments that follow it.
    #[error("Number of keys can't be greater than number of args")]
    TooManyKeys,
    /// The key count is below 1 (sorted set unions, intersections and differences).
    #[error("at least 1 input key is needed for '{0}' command")]
    NoInputKey(&'static str),
    /// The key count is not a positive integer (`*MPOP`, `*INTERCARD`).
    #[error("numkeys should be greater than 0")]
    NumKeysNotPositive,
    /// The arguments do not parse.
    #[error("syntax error")]
    Syntax,
}

/// How a `numkeys` command words its complaints, by family.
#[derive(Clone, Copy)]
enum NumKeysStyle {
    Script,
    ZSet,
    Positive { too_many_is_syntax: bool },
}

fn numkeys_style(name: &str) -> NumKeysStyle {
    match name {
        "zunion" | "zunionstore" | "zinter" | "zinterstore" | "zdiff" | "zdiffstore"
        | "zintercard" => NumKeysStyle::ZSet,
        "sintercard" => NumKeysStyle::Positive {
            too_many_is_syntax: false,
        },
        "lmpop" | "blmpop" | "zmpop" | "bzmpop" => NumKeysStyle::Positive {
            too_many_is_syntax: true,
        },
        _ => NumKeysStyle::Script,
    }
}

/// Parses a key count the way Redis does (`string2ll`): an optional minus sign and decimal
/// digits, no leading zeros, no spaces, within `i64`.
fn parse_count(arg: &[u8]) -> Option<i64> {
    let (neg, digits) = match arg.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, arg),
    };
    if digits.is_empty() || (digits[0] == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

impl Command {
    /// Writes into `out` (cleared first) the argv indices (`argv[0]` is the command name) of
    /// the keys of this call, in the order Redis lists them. A call may have no keys at all
    /// (`EVAL script 0`): the proxy then picks a shard.
    ///
    /// For a container command pass the subcommand's entry (see [`Command::resolve`]); argv
    /// still starts with the container name.
    ///
    /// # Errors
    /// A bad key count (`EVAL s abc`, `ZUNIONSTORE d 0 k`, a count larger than the arguments)
    /// is reported as the [`KeyError`] Redis would answer with. Arguments missing at the end
    /// of a variadic command give no key rather than an error, as in Redis: check arity first.
    pub fn key_indices<A: AsRef<[u8]>>(
        &self,
        argv: &[A],
        out: &mut Vec<usize>,
    ) -> Result<(), KeyError> {
        out.clear();
        self.each_key(argv, true, |i, _| out.push(i))
    }

    /// Like [`Command::key_indices`], with the flags of the key spec that found each key
    /// (what the command does to it: `ACCESS`, `UPDATE`, `INSERT`, `DELETE`, ...), for an ACL
    /// check. Arguments Redis flags `not_key` (shard channels) are left out, as Redis' ACL
    /// check leaves them out. `SORT`'s `STORE` destination is an `UPDATE`, `MIGRATE`'s keys
    /// `ACCESS` and `DELETE`.
    ///
    /// # Errors
    /// As [`Command::key_indices`].
    pub fn keys_with_flags<A: AsRef<[u8]>>(
        &self,
        argv: &[A],
        out: &mut Vec<(usize, KeyFlags)>,
    ) -> Result<(), KeyError> {
        out.clear();
        self.each_key(argv, false, |i, f| out.push((i, f)))
    }

    /// Calls `push` with each key's argv index and its spec's flags, in Redis' order.
    fn each_key<A: AsRef<[u8]>>(
        &self,
        argv: &[A],
        not_keys: bool,
        mut push: impl FnMut(usize, KeyFlags),
    ) -> Result<(), KeyError> {
        let mut fixed = Vec::new();
        match self.name {
            "sort" => {
                sort_keys(argv, &mut fixed);
                for (n, i) in fixed.into_iter().enumerate() {
                    let f = if n == 0 {
                        KeyFlags::RO.union(KeyFlags::ACCESS)
                    } else {
                        KeyFlags::OW.union(KeyFlags::UPDATE)
                    };
                    push(i, f);
                }
                return Ok(());
            }
            "migrate" => {
                migrate_keys(argv, &mut fixed);
                for i in fixed {
                    push(
                        i,
                        KeyFlags::RW.union(KeyFlags::ACCESS).union(KeyFlags::DELETE),
                    );
                }
                return Ok(());
            }
            _ => {}
        }
        let argc = argv.len() as i64;
        for spec in self.keys {
            if !not_keys && spec.flags.contains(KeyFlags::NOT_KEY) {
                continue;
            }
            let first = match spec.begin {
                BeginSearch::Index(pos) => i64::from(pos),
                BeginSearch::Keyword { keyword, startfrom } => {
                    match find_keyword(argv, keyword, i64::from(startfrom)) {
                        Some(i) => i + 1,
                        None => continue,
                    }
                }
                BeginSearch::Unknown => continue,
            };
            let (first, last, step) = match spec.find {
                FindKeys::Range {
                    lastkey,
                    keystep,
                    limit,
                } => {
                    let (lastkey, limit) = (i64::from(lastkey), i64::from(limit));
                    let last = if lastkey >= 0 {
                        first + lastkey
                    } else if limit <= 1 {
                        argc + lastkey
                    } else {
                        first + ((argc - first) / limit + lastkey)
                    };
                    (first, last, i64::from(keystep))
                }
                FindKeys::KeyNum {
                    keynumidx,
                    firstkey,
                    keystep,
                } => {
                    let idx = first + i64::from(keynumidx);
                    let Some(arg) = usize::try_from(idx).ok().and_then(|i| argv.get(i)) else {
                        continue;
                    };
                    let step = i64::from(keystep);
                    let first = first + i64::from(firstkey);
                    let count =
                        self.check_numkeys(arg.as_ref(), (argc - first + step - 1) / step)?;
                    (first, first + (count - 1) * step, step)
                }
                FindKeys::Unknown => continue,
            };
            if step <= 0 {
                continue;
            }
            let mut i = first;
            while i <= last {
                // Past the end: a short variadic call; Redis reports it as an arity error.
                if i >= 1 && i < argc {
                    let flags = if spec.flags.contains(KeyFlags::VARIABLE_FLAGS) {
                        self.call_flags(argv, spec.flags)
                    } else {
                        spec.flags
                    };
                    push(i as usize, flags);
                }
                i += step;
            }
        }
        Ok(())
    }

    /// The flags of a key whose spec says they depend on the call, as Redis' own key
    /// functions for `SET` (reads the key only with `GET`) and `BITFIELD` (writes only with
    /// `SET`, `INCRBY` or anything it cannot read) decide them.
    pub(crate) fn call_flags<A: AsRef<[u8]>>(&self, argv: &[A], spec: KeyFlags) -> KeyFlags {
        let rw = KeyFlags::RW.union(KeyFlags::ACCESS).union(KeyFlags::UPDATE);
        match self.name {
            "set" => {
                let get = argv
                    .iter()
                    .skip(3)
                    .any(|a| a.as_ref().eq_ignore_ascii_case(b"get"));
                if get {
                    rw
                } else {
                    KeyFlags::OW.union(KeyFlags::UPDATE)
                }
            }
            "bitfield" => {
                let mut i = 2;
                while i < argv.len() {
                    let rest = argv.len() - i - 1;
                    let a = argv[i].as_ref();
                    if a.eq_ignore_ascii_case(b"get") && rest >= 2 {
                        i += 3;
                    } else if a.eq_ignore_ascii_case(b"overflow") && rest >= 1 {
                        i += 2;
                    } else {
                        return rw;
                    }
                }
                KeyFlags::RO.union(KeyFlags::ACCESS)
            }
            _ => spec,
        }
    }

    /// Validates a key count against the `available` key slots, in this command's wording.
    fn check_numkeys(&self, arg: &[u8], available: i64) -> Result<i64, KeyError> {
        let parsed = parse_count(arg);
        match numkeys_style(self.name) {
            NumKeysStyle::Script => {
                let n = parsed.ok_or(KeyError::NotAnInteger)?;
                if n < 0 {
                    Err(KeyError::NegativeKeys)
                } else if n > available {
                    Err(KeyError::TooManyKeys)
                } else {
                    Ok(n)
                }
            }
            NumKeysStyle::ZSet => {
                let n = parsed.ok_or(KeyError::NotAnInteger)?;
                if n < 1 {
                    Err(KeyError::NoInputKey(self.name))
                } else if n > available {
                    Err(KeyError::Syntax)
                } else {
                    Ok(n)
                }
            }
            NumKeysStyle::Positive { too_many_is_syntax } => match parsed {
                Some(n) if n > 0 && n <= available => Ok(n),
                Some(n) if n > 0 && too_many_is_syntax => Err(KeyError::Syntax),
                Some(n) if n > 0 => Err(KeyError::TooManyKeys),
                _ => Err(KeyError::NumKeysNotPositive),
            },
        }
    }
}

/// The index of `keyword` searched from `startfrom` (forwards when positive, backwards from
/// the end when negative), as Redis' keyword begin_search does.
fn find_keyword<A: AsRef<[u8]>>(argv: &[A], keyword: &str, startfrom: i64) -> Option<i64> {
    let argc = argv.len() as i64;
    let (start, end, forward) = if startfrom >= 0 {
        (startfrom, argc - 1, true)
    } else {
        (argc + startfrom, 1, false)
    };
    let mut i = start;
    loop {
        if i < 1 || i >= argc {
            return None;
        }
        if argv[i as usize]
            .as_ref()
            .eq_ignore_ascii_case(keyword.as_bytes())
        {
            return Some(i);
        }
        if i == end {
            return None;
        }
        i += if forward { 1 } else { -1 };
    }
}

/// `SORT key [BY p] [LIMIT o c] [GET p ...] [ASC|DESC] [ALPHA] [STORE dst]`: the key, then
/// the last `STORE` destination, skipping the values of `BY`, `GET` and `LIMIT`.
fn sort_keys<A: AsRef<[u8]>>(argv: &[A], out: &mut Vec<usize>) {
    if argv.len() < 2 {
        return;
    }
    out.push(1);
    let mut store = None;
    let mut i = 2;
    while i < argv.len() {
        let a = argv[i].as_ref();
        if a.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"store") && i + 1 < argv.len() {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    out.extend(store);
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 user pw] [KEYS k...]`.
fn migrate_keys<A: AsRef<[u8]>>(argv: &[A], out: &mut Vec<usize>) {
    let mut i = 6;
    while i < argv.len() {
        let a = argv[i].as_ref();
        if a.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"keys") {
            out.extend(i + 1..argv.len());
            return;
        }
        i += 1;
    }
    if argv.len() > 3 {
        out.push(3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{lookup, lookup_argv};

    fn keys(call: &str) -> Result<Vec<usize>, KeyError> {
        let argv: Vec<&[u8]> = call.split(' ').map(str::as_bytes).collect();
        let cmd = lookup_argv(&argv).unwrap_or_else(|e| panic!("{call}: {e}"));
        let mut out = vec![99];
        cmd.key_indices(&argv, &mut out).map(|()| out)
    }

    #[test]
    fn fixed_and_variadic_keys() {
        assert_eq!(keys("GET k"), Ok(vec![1]));
        assert_eq!(keys("mset a 1 b 2 c 3"), Ok(vec![1, 3, 5]));
        assert_eq!(keys("lmove src dst LEFT RIGHT"), Ok(vec![1, 2]));
        assert_eq!(keys("bitop AND dst a b"), Ok(vec![2, 3, 4]));
        assert_eq!(keys("object ENCODING k"), Ok(vec![2]));
        assert_eq!(keys("ping"), Ok(vec![]));
    }

    #[test]
    fn numkeys_specs() {
        assert_eq!(keys("eval s 2 a b x y"), Ok(vec![3, 4]));
        assert_eq!(keys("eval s 0 x"), Ok(vec![]));
        assert_eq!(keys("zunionstore d 2 a b weights 1 2"), Ok(vec![1, 3, 4]));
        assert_eq!(keys("eval s 3 a b"), Err(KeyError::TooManyKeys));
        assert_eq!(keys("eval s 01 a"), Err(KeyError::NotAnInteger));
        assert_eq!(keys("eval s -1 a"), Err(KeyError::NegativeKeys));
        assert_eq!(
            keys("zunionstore d 0 a"),
            Err(KeyError::NoInputKey("zunionstore"))
        );
        assert_eq!(
            keys("lmpop 99999999999999999999 a left"),
            Err(KeyError::NumKeysNotPositive)
        );
    }

    #[test]
    fn keyword_specs() {
        assert_eq!(keys("xread COUNT 1 STREAMS s1 s2 0 0"), Ok(vec![4, 5]));
        assert_eq!(keys("georadius g 1 2 3 km STORE d"), Ok(vec![1, 7]));
        assert_eq!(keys("georadius g 1 2 3 km"), Ok(vec![1]));
        assert_eq!(keys("sort k BY w GET store STORE d"), Ok(vec![1, 7]));
        assert_eq!(keys("migrate h 1 k 0 10"), Ok(vec![3]));
        assert_eq!(
            keys("migrate h 1  0 10 AUTH2 u p KEYS a b"),
            Ok(vec![10, 11])
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        let words: [&[u8]; 8] = [
            b"",
            b"-1",
            b"0",
            b"3",
            b"streams",
            b"store",
            b"keys",
            b"9223372036854775808",
        ];
        let mut out = Vec::new();
        for cmd in crate::all()
            .iter()
            .flat_map(|c| std::iter::once(c).chain(c.subcommands))
        {
            for n in 0..6 {
                for w in words {
                    let name = cmd.name.split('|').collect::<Vec<_>>();
                    let mut argv: Vec<&[u8]> = name.iter().map(|s| s.as_bytes()).collect();
                    argv.extend(std::iter::repeat_n(w, n));
                    let _ = cmd.key_indices(&argv, &mut out);
                    assert!(
                        out.iter().all(|&i| i >= 1 && i < argv.len()),
                        "{}",
                        cmd.name
                    );
                }
            }
        }
        assert!(lookup(b"get").is_some());
    }
}
