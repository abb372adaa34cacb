//! Which requests may be spooled, and the reply each gets once it is on disk.
//!
//! A spooled write is acknowledged before Redis has seen it, so its reply must be one rampart
//! can give without Redis. Per command (the pool lists which of them it spools):
//!
//! | request | reply | note |
//! |---|---|---|
//! | `SET k v` (with `EX`/`PX`/`EXAT`/`PXAT`/`KEEPTTL`) | `+OK` | `NX`, `XX` and `GET` depend on the data: not spooled |
//! | `LPUSH`/`RPUSH k e...` | `:<elements pushed>` | the list's length cannot be known; it holds at least that many |
//! | `SADD k m...` | `:<distinct members given>` | the most that can be new |
//! | `ZADD k [NX] s m ...` | `:<distinct members given>` | `XX`, `GT`, `LT`, `CH`, `INCR` change the answer: not spooled |
//! | `HSET k f v ...` | `:<distinct fields given>` | the most that can be new |
//! | `XADD k <id> f v ...` | the id (`5` becomes `5-0`) | only an explicit id; `*`, `5-*` and options are not spooled |
//! | `MULTI`, those commands, `EXEC` | an array of their replies | how Sidekiq pushes a job |
//!
//! Anything else is not spooled: it fails as it would without a spool.

use std::collections::HashSet;

use rampart_config::SpoolCommand;

/// The arguments of each command in `bytes` (RESP multibulk requests only); `None` if any
/// part is not a complete multibulk request.
pub fn commands(bytes: &[u8]) -> Option<Vec<Vec<&[u8]>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (args, n) = one(&bytes[at..])?;
        out.push(args);
        at += n;
    }
    Some(out)
}

fn line(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let end = memchr::memchr(b'\n', bytes)?;
    let text = bytes[..end].strip_suffix(b"\r")?;
    Some((text, end + 1))
}

fn number(text: &[u8]) -> Option<usize> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn one(bytes: &[u8]) -> Option<(Vec<&[u8]>, usize)> {
    let (head, mut at) = line(bytes)?;
    let count = number(head.strip_prefix(b"*")?)?;
    let mut args = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let (len, n) = line(bytes.get(at..)?)?;
        let len = number(len.strip_prefix(b"$")?)?;
        at += n;
        let arg = bytes.get(at..at.checked_add(len)?)?;
        if bytes.get(at + len..at + len + 2)? != b"\r\n" {
            return None;
        }
        args.push(arg);
        at += len + 2;
    }
    Some((args, at))
}

/// The reply a spooled `bytes` gets, when every command in it is one `allowed` lists and
/// its reply can be given without the server (see the module table); `None` otherwise.
pub fn spooled_reply(bytes: &[u8], allowed: &[SpoolCommand]) -> Option<Vec<u8>> {
    let cmds = commands(bytes)?;
    match cmds.as_slice() {
        [one] => reply_of(one, allowed),
        [first, inner @ .., last]
            if is(first, b"MULTI") && is(last, b"EXEC") && first.len() == 1 && last.len() == 1 =>
        {
            let mut out = format!("*{}\r\n", inner.len()).into_bytes();
            for c in inner {
                out.extend_from_slice(&reply_of(c, allowed)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// Whether `bytes` is a whole transaction: `MULTI`, commands, `EXEC`.
pub fn is_transaction(bytes: &[u8]) -> bool {
    commands(bytes).is_some_and(|cmds| {
        cmds.len() >= 2
            && cmds.first().is_some_and(|c| is(c, b"MULTI"))
            && cmds.last().is_some_and(|c| is(c, b"EXEC"))
    })
}

/// How many replies the server sends for a spooled entry (one per command in it).
pub fn reply_count(bytes: &[u8]) -> Option<usize> {
    commands(bytes).map(|c| c.len())
}

fn is(args: &[&[u8]], name: &[u8]) -> bool {
    args.first().is_some_and(|a| a.eq_ignore_ascii_case(name))
}

fn distinct<'a>(items: impl Iterator<Item = &'a [u8]>) -> usize {
    items.collect::<HashSet<_>>().len()
}

fn int(n: usize) -> Vec<u8> {
    format!(":{n}\r\n").into_bytes()
}

fn reply_of(args: &[&[u8]], allowed: &[SpoolCommand]) -> Option<Vec<u8>> {
    let name = std::str::from_utf8(args.first()?).ok()?;
    let cmd = SpoolCommand::parse(name)?;
    if !allowed.contains(&cmd) {
        return None;
    }
    let upper = |a: &[u8]| a.to_ascii_uppercase();
    match cmd {
        SpoolCommand::Set => {
            // Only options whose reply is +OK whatever the data, well formed (a malformed
            // one would be refused at replay after the client heard +OK).
            let mut rest = args.get(3..)?;
            while let Some(opt) = rest.first() {
                match upper(opt).as_slice() {
                    b"KEEPTTL" => rest = &rest[1..],
                    b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                        let n = std::str::from_utf8(rest.get(1)?)
                            .ok()?
                            .parse::<u64>()
                            .ok()?;
                        if n == 0 {
                            return None;
                        }
                        rest = &rest[2..];
                    }
                    _ => return None,
                }
            }
            Some(b"+OK\r\n".to_vec())
        }
        SpoolCommand::Lpush | SpoolCommand::Rpush if args.len() >= 3 => Some(int(args.len() - 2)),
        SpoolCommand::Sadd if args.len() >= 3 => Some(int(distinct(args[2..].iter().copied()))),
        SpoolCommand::Zadd => {
            let mut rest = args.get(2..)?;
            if rest.first().is_some_and(|a| a.eq_ignore_ascii_case(b"NX")) {
                rest = &rest[1..];
            }
            if rest.is_empty() || !rest.len().is_multiple_of(2) {
                return None;
            }
            let scores_ok = rest.chunks(2).all(|p| {
                std::str::from_utf8(p[0])
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .is_some()
            });
            if !scores_ok {
                return None;
            }
            Some(int(distinct(rest.chunks(2).map(|p| p[1]))))
        }
        SpoolCommand::Hset if args.len() >= 4 && args.len().is_multiple_of(2) => {
            Some(int(distinct(args[2..].chunks(2).map(|p| p[0]))))
        }
        SpoolCommand::Xadd if args.len() >= 5 && !args.len().is_multiple_of(2) => {
            let id = std::str::from_utf8(args[2]).ok()?;
            let full = explicit_id(id)?;
            Some(format!("${}\r\n{full}\r\n", full.len()).into_bytes())
        }
        _ => None,
    }
}

/// `ms-seq` or `ms` (which Redis completes with `-0`), digits only; `None` for `*`, `ms-*`
/// or anything else (an option such as `MAXLEN` in the id's place).
fn explicit_id(id: &str) -> Option<String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match id.split_once('-') {
        None if digits(id) => Some(format!("{id}-0")),
        Some((ms, seq)) if digits(ms) && digits(seq) => Some(id.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        out
    }

    fn reply(args: &[&str]) -> Option<String> {
        spooled_reply(&req(args), &SpoolCommand::ALL).map(|r| String::from_utf8(r).unwrap())
    }

    #[test]
    fn each_command_gets_its_documented_reply() {
        assert_eq!(
            reply(&["SET", "k", "v", "EX", "10"]).as_deref(),
            Some("+OK\r\n")
        );
        assert_eq!(reply(&["set", "k", "v", "nx"]), None);
        assert_eq!(reply(&["SET", "k", "v", "GET"]), None);
        assert_eq!(
            reply(&["SET", "k", "v", "EX", "0"]),
            None,
            "Redis refuses it"
        );
        assert_eq!(reply(&["SET", "k", "v", "EX"]), None);
        assert_eq!(
            reply(&["SET", "k", "v", "KEEPTTL", "PX", "5"]).as_deref(),
            Some("+OK\r\n")
        );
        assert_eq!(
            reply(&["LPUSH", "q", "a", "b", "a"]).as_deref(),
            Some(":3\r\n")
        );
        assert_eq!(reply(&["RPUSH", "q", "a"]).as_deref(), Some(":1\r\n"));
        assert_eq!(
            reply(&["SADD", "s", "a", "b", "a"]).as_deref(),
            Some(":2\r\n")
        );
        assert_eq!(
            reply(&["ZADD", "z", "1", "a", "2", "a"]).as_deref(),
            Some(":1\r\n")
        );
        assert_eq!(
            reply(&["ZADD", "z", "NX", "1", "a"]).as_deref(),
            Some(":1\r\n")
        );
        assert_eq!(reply(&["ZADD", "z", "INCR", "1", "a"]), None);
        assert_eq!(reply(&["ZADD", "z", "CH", "1", "a"]), None);
        assert_eq!(
            reply(&["HSET", "h", "f", "1", "g", "2", "f", "3"]).as_deref(),
            Some(":2\r\n")
        );
        assert_eq!(
            reply(&["XADD", "x", "5-1", "f", "v"]).as_deref(),
            Some("$3\r\n5-1\r\n")
        );
        assert_eq!(
            reply(&["XADD", "x", "5", "f", "v"]).as_deref(),
            Some("$3\r\n5-0\r\n")
        );
        assert_eq!(reply(&["XADD", "x", "*", "f", "v"]), None);
        assert_eq!(reply(&["XADD", "x", "5-*", "f", "v"]), None);
        assert_eq!(reply(&["XADD", "x", "MAXLEN", "5", "1-1", "f", "v"]), None);
        assert_eq!(reply(&["INCR", "n"]), None);
    }

    #[test]
    fn a_transaction_of_spoolable_commands_answers_an_array() {
        let mut run = req(&["MULTI"]);
        run.extend(req(&["SADD", "queues", "default"]));
        run.extend(req(&["LPUSH", "queue:default", "{job}"]));
        run.extend(req(&["EXEC"]));
        let got = spooled_reply(&run, &SpoolCommand::ALL).map(|r| String::from_utf8(r).unwrap());
        assert_eq!(got.as_deref(), Some("*2\r\n:1\r\n:1\r\n"));
        assert_eq!(reply_count(&run), Some(4));
        let mut bad = req(&["MULTI"]);
        bad.extend(req(&["INCR", "n"]));
        bad.extend(req(&["EXEC"]));
        assert_eq!(spooled_reply(&bad, &SpoolCommand::ALL), None);
    }

    #[test]
    fn only_listed_commands_and_whole_requests() {
        assert_eq!(
            spooled_reply(&req(&["SADD", "s", "a"]), &[SpoolCommand::Lpush]),
            None
        );
        let whole = req(&["LPUSH", "q", "a"]);
        assert_eq!(
            spooled_reply(&whole[..whole.len() - 1], &SpoolCommand::ALL),
            None
        );
        assert_eq!(spooled_reply(b"LPUSH q a\r\n", &SpoolCommand::ALL), None);
    }
}
