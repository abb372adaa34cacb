//! What a cache pool that fails open answers for a shard that cannot answer: the miss reply of
//! each read command (the reply Redis gives when the key does not exist), and the reply of a
//! dropped write for the commands whose successful reply is fixed.
//!
//! | reply (RESP2 / RESP3) | read commands |
//! |---|---|
//! | nil `$-1` / `_` | GET, HGET, LINDEX, ZSCORE, ZRANK, ZREVRANK, SRANDMEMBER (no count), GETRANGE is `""` |
//! | one nil per key or field | MGET (its keys on that shard), HMGET |
//! | one 0 per member | SMISMEMBER |
//! | empty array `*0` | LRANGE, HKEYS, HVALS, ZRANGE, ZRANGEBYSCORE, ZREVRANGE, ZREVRANGEBYSCORE, ZRANGEBYLEX, ZREVRANGEBYLEX, XRANGE, XREVRANGE, SRANDMEMBER with a count |
//! | empty set `*0` / `~0` | SMEMBERS, SINTER, SUNION, SDIFF |
//! | empty map `*0` / `%0` | HGETALL |
//! | `:0` | EXISTS, SCARD, LLEN, HLEN, ZCARD, STRLEN, SISMEMBER, HEXISTS, HSTRLEN, ZCOUNT, ZLEXCOUNT, BITCOUNT, GETBIT, PFCOUNT |
//! | `:-2` | TTL, PTTL, EXPIRETIME, PEXPIRETIME |
//! | `+none` | TYPE |
//!
//! | dropped write | reply |
//! |---|---|
//! | SET (no NX, XX or GET), SETEX, PSETEX, MSET | `+OK` |
//! | DEL, UNLINK, TOUCH, EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST, HDEL, SREM, ZREM | `:0` (as if the key were not there) |
//!
//! Any other command has no miss: it gets the error. The RESP3 forms are the ones Redis 7
//! sends a client that said `HELLO 3` (its null, set and map types).

/// The shape of a miss reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// `$-1` (RESP3: `_`).
    Nil,
    /// `$0` (an empty string).
    Empty,
    /// `*N` of `$-1` (RESP3: `_`), one per argument from `from` on.
    NilPer {
        /// Index of the first argument that gets a nil.
        from: usize,
    },
    /// `*N` of `:0`, one per argument from `from` on.
    ZeroPer {
        /// Index of the first argument that gets a 0.
        from: usize,
    },
    /// `*0`.
    EmptyArray,
    /// `*0` (RESP3: the empty set `~0`).
    EmptySet,
    /// `*0` (RESP3: the empty map `%0`).
    EmptyMap,
    /// `:n`.
    Int(i64),
    /// `+OK`.
    Ok,
    /// `+none`.
    None,
}

impl Miss {
    /// The reply for a call with `argc` arguments (the command name included), in RESP3
    /// when `resp3` (the session said `HELLO 3`), else RESP2.
    #[must_use]
    pub fn encode(self, argc: usize, resp3: bool) -> Vec<u8> {
        let nil: &[u8] = if resp3 { b"_\r\n" } else { b"$-1\r\n" };
        let per = |from: usize, item: &[u8]| {
            let n = argc.saturating_sub(from);
            let mut out = format!("*{n}\r\n").into_bytes();
            for _ in 0..n {
                out.extend_from_slice(item);
            }
            out
        };
        match self {
            Miss::Nil => nil.to_vec(),
            Miss::Empty => b"$0\r\n\r\n".to_vec(),
            Miss::NilPer { from } => per(from, nil),
            Miss::ZeroPer { from } => per(from, b":0\r\n"),
            Miss::EmptySet if resp3 => b"~0\r\n".to_vec(),
            Miss::EmptyMap if resp3 => b"%0\r\n".to_vec(),
            Miss::EmptyArray | Miss::EmptySet | Miss::EmptyMap => b"*0\r\n".to_vec(),
            Miss::Int(n) => format!(":{n}\r\n").into_bytes(),
            Miss::Ok => b"+OK\r\n".to_vec(),
            Miss::None => b"+none\r\n".to_vec(),
        }
    }
}

/// The miss reply of the read command `name` (any case) called with `argc` arguments;
/// `None` when it has none.
#[must_use]
pub fn read_miss(name: &[u8], argc: usize) -> Option<Miss> {
    let mut buf = [0u8; 20];
    let n = upper(name, &mut buf)?;
    Some(match n {
        b"GET" | b"HGET" | b"LINDEX" | b"ZSCORE" | b"ZRANK" | b"ZREVRANK" => Miss::Nil,
        b"SRANDMEMBER" if argc == 2 => Miss::Nil,
        b"SRANDMEMBER" => Miss::EmptyArray,
        b"GETRANGE" | b"SUBSTR" => Miss::Empty,
        b"MGET" => Miss::NilPer { from: 1 },
        b"HMGET" => Miss::NilPer { from: 2 },
        b"SMISMEMBER" => Miss::ZeroPer { from: 2 },
        b"LRANGE" | b"HKEYS" | b"HVALS" | b"ZRANGE" | b"ZRANGEBYSCORE" | b"ZREVRANGE"
        | b"ZREVRANGEBYSCORE" | b"ZRANGEBYLEX" | b"ZREVRANGEBYLEX" | b"XRANGE" | b"XREVRANGE" => {
            Miss::EmptyArray
        }
        b"SMEMBERS" | b"SINTER" | b"SUNION" | b"SDIFF" => Miss::EmptySet,
        b"HGETALL" => Miss::EmptyMap,
        b"EXISTS" | b"SCARD" | b"LLEN" | b"HLEN" | b"ZCARD" | b"STRLEN" | b"SISMEMBER"
        | b"HEXISTS" | b"HSTRLEN" | b"ZCOUNT" | b"ZLEXCOUNT" | b"BITCOUNT" | b"GETBIT"
        | b"PFCOUNT" => Miss::Int(0),
        b"TTL" | b"PTTL" | b"EXPIRETIME" | b"PEXPIRETIME" => Miss::Int(-2),
        b"TYPE" => Miss::None,
        _ => return None,
    })
}

/// The reply of the write command `name` dropped as if it had succeeded, given its
/// arguments' count and whether any argument is one of `NX`, `XX` or `GET` (a SET whose
/// reply then depends on the data); `None` when its reply is not fixed.
#[must_use]
pub fn drop_reply(name: &[u8], conditional: bool) -> Option<Miss> {
    let mut buf = [0u8; 20];
    let n = upper(name, &mut buf)?;
    Some(match n {
        b"SET" if !conditional => Miss::Ok,
        b"SETEX" | b"PSETEX" | b"MSET" => Miss::Ok,
        b"DEL" | b"UNLINK" | b"TOUCH" | b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT"
        | b"PERSIST" | b"HDEL" | b"SREM" | b"ZREM" => Miss::Int(0),
        _ => return None,
    })
}

fn upper<'a>(name: &[u8], buf: &'a mut [u8; 20]) -> Option<&'a [u8]> {
    let out = buf.get_mut(..name.len())?;
    out.copy_from_slice(name);
    out.make_ascii_uppercase();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_have_the_type_redis_gives_a_missing_key() {
        let r = |name: &[u8], argc| read_miss(name, argc).map(|m| m.encode(argc, false));
        assert_eq!(r(b"get", 2).as_deref(), Some(&b"$-1\r\n"[..]));
        assert_eq!(r(b"MGET", 3).as_deref(), Some(&b"*2\r\n$-1\r\n$-1\r\n"[..]));
        assert_eq!(r(b"lrange", 4).as_deref(), Some(&b"*0\r\n"[..]));
        assert_eq!(r(b"EXISTS", 3).as_deref(), Some(&b":0\r\n"[..]));
        assert_eq!(r(b"ttl", 2).as_deref(), Some(&b":-2\r\n"[..]));
        assert_eq!(r(b"type", 2).as_deref(), Some(&b"+none\r\n"[..]));
        assert_eq!(r(b"incr", 2), None, "a write has no miss");
        assert_eq!(r(b"averyveryverylongcommandname", 2), None);
        assert_eq!(r(b"smembers", 2).as_deref(), Some(&b"*0\r\n"[..]));
        assert_eq!(r(b"hgetall", 2).as_deref(), Some(&b"*0\r\n"[..]));
    }

    #[test]
    fn resp3_misses_are_what_redis_sends_a_resp3_client() {
        let r = |name: &[u8], argc| read_miss(name, argc).map(|m| m.encode(argc, true));
        assert_eq!(r(b"GET", 2).as_deref(), Some(&b"_\r\n"[..]));
        assert_eq!(r(b"zscore", 3).as_deref(), Some(&b"_\r\n"[..]));
        assert_eq!(r(b"MGET", 3).as_deref(), Some(&b"*2\r\n_\r\n_\r\n"[..]));
        assert_eq!(r(b"HMGET", 4).as_deref(), Some(&b"*2\r\n_\r\n_\r\n"[..]));
        assert_eq!(r(b"SMEMBERS", 2).as_deref(), Some(&b"~0\r\n"[..]));
        assert_eq!(r(b"sunion", 3).as_deref(), Some(&b"~0\r\n"[..]));
        assert_eq!(r(b"HGETALL", 2).as_deref(), Some(&b"%0\r\n"[..]));
        assert_eq!(r(b"LRANGE", 4).as_deref(), Some(&b"*0\r\n"[..]));
        assert_eq!(r(b"SRANDMEMBER", 3).as_deref(), Some(&b"*0\r\n"[..]));
        assert_eq!(r(b"GETRANGE", 4).as_deref(), Some(&b"$0\r\n\r\n"[..]));
        assert_eq!(r(b"TYPE", 2).as_deref(), Some(&b"+none\r\n"[..]));
        assert_eq!(
            drop_reply(b"SET", false)
                .map(|m| m.encode(3, true))
                .as_deref(),
            Some(&b"+OK\r\n"[..])
        );
    }

    #[test]
    fn only_writes_with_a_fixed_reply_can_be_dropped() {
        assert_eq!(drop_reply(b"set", false), Some(Miss::Ok));
        assert_eq!(drop_reply(b"SET", true), None, "SET NX/XX/GET");
        assert_eq!(drop_reply(b"del", false), Some(Miss::Int(0)));
        assert_eq!(drop_reply(b"INCR", false), None);
        assert_eq!(drop_reply(b"LPUSH", false), None);
    }
}
