//! Fragment and coalesce: how the replies of a request split over several shards become one.
//!
//! A multi-key request (MGET, MSET, DEL, ...) is cut into one sub-request per shard; a keyless
//! one (DBSIZE, KEYS, ...) goes to every shard. Each becomes a gather slot in the session's
//! [`crate::reply::pending::Pending`] queue with a [`Merger`] that knows how to combine the parts. Any
//! part that is an error reply makes the whole reply that error (the first one, in part order),
//! as a client of a single Redis would see it.

pub mod splice;

use bytes::{BufMut, Bytes, BytesMut};
use resp::{encode, Value};

/// Combines the replies of the parts of one request.
#[derive(Clone, Debug)]
pub enum Merger {
    /// Array replies whose elements go back to the key positions of the original request
    /// (`positions[part][i]` is where element `i` of part `part` belongs); MGET.
    Array {
        /// Number of elements of the merged array.
        total: usize,
        /// Original positions, per part.
        positions: Vec<Vec<u32>>,
    },
    /// `+OK` when every part says OK.
    AllOk,
    /// Sum of integer replies.
    Sum,
    /// Concatenation of array replies (KEYS).
    Concat,
    /// One part of a SCAN walking the shards in turn: rewrites the cursor.
    Scan {
        /// Index of the shard this cursor walks.
        shard: u64,
        /// Number of shards.
        shards: u64,
    },
    /// A random non-nil reply (RANDOMKEY).
    RandomKey,
    /// Every part answers the same; return it (SCRIPT LOAD).
    Same,
    /// Element-wise AND of integer arrays (SCRIPT EXISTS).
    And,
    /// The first part's reply.
    First,
    /// The first part's reply to CONFIG GET, without the parameters that hold a server's
    /// credentials ([`CONFIG_SECRETS`]).
    ConfigGet,
    /// Array replies joined with duplicates left out, first seen first (PUBSUB CHANNELS).
    Union,
    /// The largest integer reply (PUBSUB NUMPAT: every shard holds every pattern).
    Max,
    /// Arrays of `name, value` pairs whose pairs go back to the positions of the names in
    /// the original request (`positions[part][i]` is where pair `i` of part `part` belongs);
    /// PUBSUB NUMSUB.
    Pairs {
        /// Number of pairs of the merged array.
        total: usize,
        /// Original positions, per part.
        positions: Vec<Vec<u32>>,
    },
    /// INFO: the proxy's own sections, then the shards' keyspace sections summed.
    Info {
        /// The proxy's sections, already rendered.
        head: String,
    },
    /// A transaction's `EXEC` reply (part 0) with rampart's own answers put at their places
    /// (see [`crate::reply::merge::splice`]); the parts after the first are those the answers merge
    /// from, in order.
    Splice(Vec<crate::reply::merge::splice::Spliced>),
}

pub(crate) const BAD_REPLY: &[u8] = b"-ERR rampart: a shard sent a reply that cannot be merged\r\n";

impl Merger {
    /// Whether a part's error reply leaves the others' merge standing (INFO: the keyspace
    /// of the shards that answered, `shards_not_counted:N` saying how many did not), where
    /// every other merge answers the first error.
    pub fn keeps_going(&self) -> bool {
        matches!(self, Merger::Info { .. })
    }

    /// Merge the parts (in part order) into one reply.
    pub fn merge(self, parts: Vec<Bytes>) -> Bytes {
        // An error inside a spliced answer is that answer's, not the whole reply's.
        let answers = match self {
            Merger::Splice(answers) => return crate::reply::merge::splice::splice(parts, answers),
            other => other,
        };
        answers.merge_parts(parts)
    }

    fn merge_parts(self, parts: Vec<Bytes>) -> Bytes {
        if let Some(err) = parts.iter().find(|p| p.first() == Some(&b'-')) {
            if !self.keeps_going() {
                return err.clone();
            }
        }
        let mut out = BytesMut::new();
        let ok = match self {
            Merger::Array { total, positions } => merge_array(&parts, total, &positions, &mut out),
            Merger::AllOk => {
                encode::simple(&mut out, b"OK");
                true
            }
            Merger::Sum => merge_sum(&parts, &mut out),
            Merger::Concat => merge_concat(&parts, &mut out),
            Merger::Scan { shard, shards } => merge_scan(&parts, shard, shards, &mut out),
            Merger::RandomKey => return pick_random_key(parts),
            Merger::Same | Merger::First => return parts.into_iter().next().unwrap_or_default(),
            Merger::ConfigGet => match parts.first() {
                Some(p) if matches!(p.first(), Some(b'*' | b'%')) => without_secrets(p, &mut out),
                // An error (or anything but the pairs) goes back as the server gave it.
                _ => return parts.into_iter().next().unwrap_or_default(),
            },
            Merger::And => merge_and(&parts, &mut out),
            Merger::Info { head } => merge_info(&parts, &head, &mut out),
            Merger::Union => merge_union(&parts, &mut out),
            Merger::Max => merge_max(&parts, &mut out),
            Merger::Pairs { total, positions } => merge_pairs(&parts, total, &positions, &mut out),
            Merger::Splice(_) => false,
        };
        if ok {
            out.freeze()
        } else {
            Bytes::from_static(BAD_REPLY)
        }
    }
}

/// CONFIG GET parameters that hold a server's credentials: left out of CONFIG GET's reply,
/// as if the server did not know them, so no client learns the password rampart uses.
pub const CONFIG_SECRETS: [&[u8]; 4] = [
    b"requirepass",
    b"masterauth",
    b"tls-key-file-pass",
    b"tls-client-key-file-pass",
];

/// CONFIG GET's reply (an array of name, value pairs in RESP2; a map in RESP3) without the
/// pairs named in [`CONFIG_SECRETS`].
fn without_secrets(reply: &[u8], out: &mut BytesMut) -> bool {
    let Some(cr) = memchr::memchr(b'\r', reply) else {
        return false;
    };
    let Some(n) = std::str::from_utf8(&reply[1..cr])
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return false;
    };
    let map = reply[0] == b'%';
    let items = if map { n.saturating_mul(2) } else { n };
    let mut at = cr + 2;
    let mut kept: Vec<&[u8]> = Vec::with_capacity(items.min(1024));
    for _ in 0..items / 2 {
        let mut pair = [&b""[..]; 2];
        for p in &mut pair {
            let Ok(Some(len)) = reply.get(at..).map_or(Ok(None), resp::reply::reply_len) else {
                return false;
            };
            *p = &reply[at..at + len];
            at += len;
        }
        let secret = match resp::peek(pair[0]) {
            Ok(Value::Bulk(Some(name))) => {
                CONFIG_SECRETS.iter().any(|s| name.eq_ignore_ascii_case(s))
            }
            _ => false,
        };
        if !secret {
            kept.extend(pair);
        }
    }
    if map {
        out.put_slice(format!("%{}\r\n", kept.len() / 2).as_bytes());
    } else {
        encode::array_header(out, kept.len());
    }
    for k in kept {
        out.put_slice(k);
    }
    true
}

fn array_items(reply: &[u8]) -> Option<Vec<&[u8]>> {
    match resp::peek(reply).ok()? {
        Value::Array(Some(items)) => Some(items),
        _ => None,
    }
}

fn merge_array(parts: &[Bytes], total: usize, positions: &[Vec<u32>], out: &mut BytesMut) -> bool {
    let mut slots: Vec<&[u8]> = vec![&b"$-1\r\n"[..]; total];
    for (part, pos) in parts.iter().zip(positions) {
        let Some(items) = array_items(part) else {
            return false;
        };
        if items.len() != pos.len() {
            return false;
        }
        for (item, &p) in items.into_iter().zip(pos) {
            if let Some(s) = slots.get_mut(p as usize) {
                *s = item;
            }
        }
    }
    encode::array_header(out, total);
    for s in slots {
        out.put_slice(s);
    }
    true
}

fn merge_sum(parts: &[Bytes], out: &mut BytesMut) -> bool {
    let mut sum: i64 = 0;
    for p in parts {
        match resp::peek(p) {
            Ok(Value::Integer(n)) => sum = sum.saturating_add(n),
            _ => return false,
        }
    }
    encode::integer(out, sum);
    true
}

fn merge_concat(parts: &[Bytes], out: &mut BytesMut) -> bool {
    let mut all = Vec::new();
    for p in parts {
        match array_items(p) {
            Some(items) => all.extend(items),
            None => return false,
        }
    }
    encode::array_header(out, all.len());
    for i in all {
        out.put_slice(i);
    }
    true
}

fn merge_union(parts: &[Bytes], out: &mut BytesMut) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    for p in parts {
        match array_items(p) {
            Some(items) => all.extend(items.into_iter().filter(|i| seen.insert(*i))),
            None => return false,
        }
    }
    encode::array_header(out, all.len());
    for i in all {
        out.put_slice(i);
    }
    true
}

fn merge_max(parts: &[Bytes], out: &mut BytesMut) -> bool {
    let mut max: i64 = 0;
    for p in parts {
        match resp::peek(p) {
            Ok(Value::Integer(n)) => max = max.max(n),
            _ => return false,
        }
    }
    encode::integer(out, max);
    true
}

fn merge_pairs(parts: &[Bytes], total: usize, positions: &[Vec<u32>], out: &mut BytesMut) -> bool {
    let mut slots: Vec<Option<(&[u8], &[u8])>> = vec![None; total];
    for (part, pos) in parts.iter().zip(positions) {
        let Some(items) = array_items(part) else {
            return false;
        };
        if items.len() != pos.len() * 2 {
            return false;
        }
        for (pair, &p) in items.chunks(2).zip(pos) {
            if let (Some(s), [name, value]) = (slots.get_mut(p as usize), pair) {
                *s = Some((name, value));
            }
        }
    }
    encode::array_header(out, total * 2);
    for s in slots {
        let Some((name, value)) = s else {
            return false;
        };
        out.put_slice(name);
        out.put_slice(value);
    }
    true
}

/// The least step between a shard's cursors in the proxy's SCAN cursor: more than a
/// cluster's nodes (1,000 at most), so that a cluster pool's cursor keeps its meaning when
/// a primary joins and the shards grow (the new one comes last).
pub const SCAN_STRIDE: u64 = 4096;

/// The step between a shard's cursors for a pool of `shards`: [`SCAN_STRIDE`], or
/// `shards` when there are more.
fn scan_stride(shards: u64) -> u64 {
    shards.max(SCAN_STRIDE)
}

/// The proxy's SCAN cursor split into `(backend_cursor, shard)`: the cursor is
/// `backend_cursor * stride + shard`, so one number walks every shard in turn (stride:
/// [`SCAN_STRIDE`], or the shard count when larger). The shard may be `shards` or more
/// (a cursor from before the pool lost shards, or made up): the caller ends the walk.
pub fn scan_cursor_split(cursor: u64, shards: u64) -> (u64, u64) {
    let stride = scan_stride(shards);
    (cursor / stride, cursor % stride)
}

fn merge_scan(parts: &[Bytes], shard: u64, shards: u64, out: &mut BytesMut) -> bool {
    let Some(p) = parts.first() else { return false };
    let Some(items) = array_items(p) else {
        return false;
    };
    let [cur, keys] = items[..] else { return false };
    let cursor = match resp::peek(cur) {
        Ok(Value::Bulk(Some(c))) => std::str::from_utf8(c)
            .ok()
            .and_then(|c| c.parse::<u64>().ok()),
        _ => None,
    };
    let Some(cursor) = cursor else { return false };
    let next = if cursor == 0 {
        if shard + 1 >= shards {
            Some(0)
        } else {
            Some(shard + 1)
        }
    } else {
        cursor
            .checked_mul(scan_stride(shards))
            .and_then(|c| c.checked_add(shard))
    };
    let Some(next) = next else { return false };
    encode::array_header(out, 2);
    encode::bulk(out, itoa::Buffer::new().format(next).as_bytes());
    out.put_slice(keys);
    true
}

fn pick_random_key(parts: Vec<Bytes>) -> Bytes {
    // Every part nil: the first one, the null of the protocol the client speaks.
    let none = parts
        .first()
        .cloned()
        .unwrap_or_else(|| Bytes::from_static(b"$-1\r\n"));
    let found: Vec<Bytes> = parts
        .into_iter()
        .filter(|p| matches!(resp::peek(p), Ok(Value::Bulk(Some(_)))))
        .collect();
    if found.is_empty() {
        return none;
    }
    let i = crate::rand::below(found.len() as u64) as usize;
    found[i].clone()
}

fn merge_and(parts: &[Bytes], out: &mut BytesMut) -> bool {
    let mut acc: Option<Vec<bool>> = None;
    for p in parts {
        let Some(items) = array_items(p) else {
            return false;
        };
        let mut vals = Vec::with_capacity(items.len());
        for i in items {
            match resp::peek(i) {
                Ok(Value::Integer(n)) => vals.push(n != 0),
                _ => return false,
            }
        }
        acc = Some(match acc {
            None => vals,
            Some(a) if a.len() == vals.len() => a.iter().zip(vals).map(|(x, y)| *x && y).collect(),
            Some(_) => return false,
        });
    }
    let acc = acc.unwrap_or_default();
    encode::array_header(out, acc.len());
    for v in acc {
        encode::integer(out, v as i64);
    }
    true
}

/// Sum `dbN:keys=..,expires=..,avg_ttl=..` lines of the shards' `INFO keyspace` replies.
fn merge_info(parts: &[Bytes], head: &str, out: &mut BytesMut) -> bool {
    let mut dbs: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    let mut verbatim = false;
    let mut missing = 0;
    for p in parts {
        if p.first() == Some(&b'-') {
            // A shard that could not answer: its keys are left out, and counted below.
            missing += 1;
            continue;
        }
        let text = match resp::peek(p) {
            Ok(Value::Bulk(Some(text))) => text,
            // RESP3 connections answer INFO with a verbatim string, `=<len>\r\ntxt:<text>\r\n`.
            _ => match verbatim_text(p) {
                Some(text) => {
                    verbatim = true;
                    text
                }
                None => return false,
            },
        };
        for line in String::from_utf8_lossy(text).lines() {
            let Some((db, rest)) = line.split_once(':') else {
                continue;
            };
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let e = dbs.entry(n).or_default();
            for kv in rest.split(',') {
                match kv.split_once('=') {
                    Some(("keys", v)) => e.0 += v.parse::<u64>().unwrap_or(0),
                    Some(("expires", v)) => e.1 += v.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    let mut text = String::from(head);
    text.push_str("# Keyspace\r\n");
    for (db, (keys, expires)) in dbs {
        text.push_str(&format!(
            "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n"
        ));
    }
    if missing > 0 {
        text.push_str(&format!("shards_not_counted:{missing}\r\n"));
    }
    encode::text_for(out, verbatim, text.as_bytes());
    true
}

/// The text of a RESP3 verbatim string reply (`=<len>\r\n<fmt>:<text>\r\n`), without its
/// format.
fn verbatim_text(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"=")?;
    let eol = memchr::memchr(b'\r', rest)?;
    let len: usize = std::str::from_utf8(&rest[..eol]).ok()?.parse().ok()?;
    let body = rest.get(eol + 2..eol + 2 + len)?;
    body.get(4..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn mget_elements_return_to_their_key_positions() {
        let m = Merger::Array {
            total: 4,
            positions: vec![vec![0, 2], vec![3, 1]],
        };
        let out = m.merge(vec![
            b(b"*2\r\n$1\r\na\r\n$-1\r\n"),
            b(b"*2\r\n$1\r\nd\r\n$1\r\nb\r\n"),
        ]);
        assert_eq!(&out[..], b"*4\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n$1\r\nd\r\n");
    }

    #[test]
    fn pubsub_merges() {
        let u = Merger::Union.merge(vec![
            b(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            b(b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ]);
        assert_eq!(&u[..], b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n");
        let m = Merger::Max.merge(vec![b(b":2\r\n"), b(b":5\r\n"), b(b":0\r\n")]);
        assert_eq!(&m[..], b":5\r\n");
        let p = Merger::Pairs {
            total: 3,
            positions: vec![vec![1], vec![0, 2]],
        }
        .merge(vec![
            b(b"*2\r\n$1\r\ny\r\n:2\r\n"),
            b(b"*4\r\n$1\r\nx\r\n:1\r\n$1\r\nz\r\n:3\r\n"),
        ]);
        assert_eq!(
            &p[..],
            b"*6\r\n$1\r\nx\r\n:1\r\n$1\r\ny\r\n:2\r\n$1\r\nz\r\n:3\r\n"
        );
    }

    #[test]
    fn the_first_error_wins() {
        let out = Merger::Sum.merge(vec![b(b":1\r\n"), b(b"-ERR one\r\n"), b(b"-ERR two\r\n")]);
        assert_eq!(&out[..], b"-ERR one\r\n");
    }

    #[test]
    fn sums_and_concatenations() {
        assert_eq!(
            &Merger::Sum.merge(vec![b(b":1\r\n"), b(b":41\r\n")])[..],
            b":42\r\n"
        );
        let keys = Merger::Concat.merge(vec![
            b(b"*1\r\n$1\r\na\r\n"),
            b(b"*0\r\n"),
            b(b"*1\r\n$1\r\nb\r\n"),
        ]);
        assert_eq!(&keys[..], b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    }

    #[test]
    fn scan_cursor_walks_shards_in_turn() {
        let reply = |c: &'static [u8]| {
            let mut v = BytesMut::new();
            encode::array_header(&mut v, 2);
            encode::bulk(&mut v, c);
            v.put_slice(b"*0\r\n");
            v.freeze()
        };
        let done_first = Merger::Scan {
            shard: 0,
            shards: 3,
        }
        .merge(vec![reply(b"0")]);
        assert_eq!(
            &done_first[..],
            b"*2\r\n$1\r\n1\r\n*0\r\n",
            "next shard, cursor 0"
        );
        let done_last = Merger::Scan {
            shard: 2,
            shards: 3,
        }
        .merge(vec![reply(b"0")]);
        assert_eq!(&done_last[..], b"*2\r\n$1\r\n0\r\n*0\r\n", "the walk ends");
        let mid = Merger::Scan {
            shard: 1,
            shards: 3,
        }
        .merge(vec![reply(b"7")]);
        assert_eq!(&mid[..], b"*2\r\n$5\r\n28673\r\n*0\r\n");
        assert_eq!(scan_cursor_split(28673, 3), (7, 1));
        // One more shard (a primary joined the cluster): the cursor means the same.
        assert_eq!(scan_cursor_split(28673, 4), (7, 1));
        assert_eq!(scan_cursor_split(2, 4), (0, 2), "the start of a shard");
    }

    #[test]
    fn all_ok_and_script_exists() {
        assert_eq!(
            &Merger::AllOk.merge(vec![b(b"+OK\r\n"), b(b"+OK\r\n")])[..],
            b"+OK\r\n"
        );
        let and = Merger::And.merge(vec![b(b"*2\r\n:1\r\n:1\r\n"), b(b"*2\r\n:1\r\n:0\r\n")]);
        assert_eq!(&and[..], b"*2\r\n:1\r\n:0\r\n");
    }

    #[test]
    fn info_sums_keyspaces() {
        let p1 = b(b"$44\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=5\r\n\r\n");
        let p2 = b(b"$44\r\n# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\n\r\n");
        let out = Merger::Info {
            head: String::new(),
        }
        .merge(vec![p1, p2]);
        let s = String::from_utf8_lossy(&out).to_string();
        assert!(s.contains("db0:keys=7,expires=1,avg_ttl=0"), "{s}");
    }
}
