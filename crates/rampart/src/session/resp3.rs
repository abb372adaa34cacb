//! COMMAND's replies as Redis sends them to a RESP3 client.
//!
//! The command table encodes `COMMAND`, `COMMAND INFO` and `COMMAND DOCS` in RESP2 (flat
//! arrays). A RESP3 client gets the same values with Redis 7's RESP3 types: the flags, ACL
//! categories, tips, key specifications and subcommands of a command are sets; a key
//! specification, its `begin_search` and
//! `find_keys` and their `spec` are maps; `COMMAND DOCS` is a map of command name to a map
//! whose `doc_flags` and `history` are sets, whose `arguments` are maps (their `flags` a set, nested
//! `arguments` the same) and whose `subcommands` are a map of name to docs; an unknown
//! command in `COMMAND INFO` is `_`; each key's flags in `COMMAND GETKEYSANDFLAGS` are a set. A reply that does not have the expected shape (an error,
//! a count, a list) is left as it is.

use bytes::{BufMut, BytesMut};
use resp::{encode, peek, Value};

/// The RESP3 form of `resp2`, the RESP2 reply of the COMMAND call `argv`.
pub fn command_reply(argv: &[&[u8]], resp2: &[u8]) -> BytesMut {
    let sub = argv
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let mut out = BytesMut::with_capacity(resp2.len());
    let done = match &sub[..] {
        b"" | b"info" => each(resp2, &mut out, info),
        b"docs" => pairs(resp2, &mut out, |_, v, out| doc(v, out)),
        b"getkeysandflags" => each(resp2, &mut out, key_and_flags),
        _ => false,
    };
    if !done {
        out.clear();
        out.extend_from_slice(resp2);
    }
    out
}

fn items(frame: &[u8]) -> Option<Vec<&[u8]>> {
    match peek(frame).ok()? {
        Value::Array(Some(items)) => Some(items),
        _ => None,
    }
}

/// An array whose elements each go through `f`.
fn each(frame: &[u8], out: &mut BytesMut, f: fn(&[u8], &mut BytesMut) -> bool) -> bool {
    let Some(items) = items(frame) else {
        return false;
    };
    encode::array_header(out, items.len());
    items.into_iter().all(|i| f(i, out))
}

/// A flat array of key/value pairs as a map; each value goes through `f` with its key.
fn pairs(
    frame: &[u8],
    out: &mut BytesMut,
    f: impl Fn(&[u8], &[u8], &mut BytesMut) -> bool,
) -> bool {
    let Some(items) = items(frame) else {
        return false;
    };
    if items.len() % 2 != 0 {
        return false;
    }
    encode::map_header(out, items.len() / 2);
    items.chunks(2).all(|kv| {
        out.put_slice(kv[0]);
        let key = match peek(kv[0]) {
            Ok(Value::Bulk(Some(k)) | Value::Simple(k)) => k,
            _ => b"",
        };
        f(key, kv[1], out)
    })
}

/// An array as a set whose elements each go through `f`.
fn set_of(frame: &[u8], out: &mut BytesMut, f: fn(&[u8], &mut BytesMut) -> bool) -> bool {
    let Some(items) = items(frame) else {
        return false;
    };
    encode::set_header(out, items.len());
    items.into_iter().all(|i| f(i, out))
}

/// An array as a set.
fn set(frame: &[u8], out: &mut BytesMut) -> bool {
    let Some(items) = items(frame) else {
        return false;
    };
    encode::set_header(out, items.len());
    items.into_iter().for_each(|i| out.put_slice(i));
    true
}

/// One key of `COMMAND GETKEYSANDFLAGS`: `[key, flags]`, the flags a set.
fn key_and_flags(frame: &[u8], out: &mut BytesMut) -> bool {
    match items(frame).as_deref() {
        Some([key, flags]) => {
            encode::array_header(out, 2);
            out.put_slice(key);
            set(flags, out)
        }
        _ => false,
    }
}

fn copy(frame: &[u8], out: &mut BytesMut) -> bool {
    out.put_slice(frame);
    true
}

/// One command of COMMAND INFO (or nil for an unknown name).
fn info(frame: &[u8], out: &mut BytesMut) -> bool {
    if frame == b"$-1\r\n" {
        encode::null(out);
        return true;
    }
    let Some(items) = items(frame) else {
        return false;
    };
    encode::array_header(out, items.len());
    items.into_iter().enumerate().all(|(i, v)| match i {
        2 | 6 | 7 => set(v, out),
        8 => set_of(v, out, key_spec),
        9 => set_of(v, out, info),
        _ => copy(v, out),
    })
}

fn key_spec(frame: &[u8], out: &mut BytesMut) -> bool {
    pairs(frame, out, |k, v, out| match k {
        b"flags" => set(v, out),
        b"begin_search" | b"find_keys" => pairs(v, out, |k, v, out| match k {
            b"spec" => pairs(v, out, |_, v, out| copy(v, out)),
            _ => copy(v, out),
        }),
        _ => copy(v, out),
    })
}

fn doc(frame: &[u8], out: &mut BytesMut) -> bool {
    pairs(frame, out, |k, v, out| match k {
        b"doc_flags" | b"history" => set(v, out),
        b"arguments" => each(v, out, argument),
        b"subcommands" => pairs(v, out, |_, v, out| doc(v, out)),
        _ => copy(v, out),
    })
}

fn argument(frame: &[u8], out: &mut BytesMut) -> bool {
    pairs(frame, out, |k, v, out| match k {
        b"flags" => set(v, out),
        b"arguments" => each(v, out, argument),
        _ => copy(v, out),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_info_and_docs_take_redis_resp3_types() {
        // What redis-server 7.0 sends for GET in RESP2 and in RESP3.
        let info2 = b"*1\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n+access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n";
        let info3 = b"*1\r\n*10\r\n$3\r\nget\r\n:2\r\n~2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n~3\r\n+@read\r\n+@string\r\n+@fast\r\n~0\r\n~1\r\n%3\r\n$5\r\nflags\r\n~2\r\n+RO\r\n+access\r\n$12\r\nbegin_search\r\n%2\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n%1\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n%2\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n%3\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n~0\r\n";
        let argv: &[&[u8]] = &[b"COMMAND", b"INFO", b"get"];
        assert_eq!(&command_reply(argv, info2)[..], &info3[..]);
        let argv: &[&[u8]] = &[b"COMMAND", b"INFO", b"nosuch"];
        assert_eq!(&command_reply(argv, b"*1\r\n$-1\r\n")[..], b"*1\r\n_\r\n");

        let docs2 = b"*2\r\n$3\r\nget\r\n*10\r\n$7\r\nsummary\r\n$22\r\nGet the value of a key\r\n$5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n$10\r\ncomplexity\r\n$4\r\nO(1)\r\n$9\r\narguments\r\n*1\r\n*6\r\n$4\r\nname\r\n$3\r\nkey\r\n$4\r\ntype\r\n$3\r\nkey\r\n$14\r\nkey_spec_index\r\n:0\r\n";
        let docs3 = b"%1\r\n$3\r\nget\r\n%5\r\n$7\r\nsummary\r\n$22\r\nGet the value of a key\r\n$5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n$10\r\ncomplexity\r\n$4\r\nO(1)\r\n$9\r\narguments\r\n*1\r\n%3\r\n$4\r\nname\r\n$3\r\nkey\r\n$4\r\ntype\r\n$3\r\nkey\r\n$14\r\nkey_spec_index\r\n:0\r\n";
        // GETKEYSANDFLAGS: each key's flags become a set.
        let argv: &[&[u8]] = &[b"COMMAND", b"GETKEYSANDFLAGS", b"set", b"k", b"v"];
        assert_eq!(
            &command_reply(argv, b"*1\r\n*2\r\n$1\r\nk\r\n*2\r\n+OW\r\n+update\r\n")[..],
            b"*1\r\n*2\r\n$1\r\nk\r\n~2\r\n+OW\r\n+update\r\n"
        );
        let argv: &[&[u8]] = &[b"COMMAND", b"DOCS", b"get"];
        assert_eq!(&command_reply(argv, docs2)[..], &docs3[..]);
        assert_eq!(&command_reply(argv, b"*0\r\n")[..], b"%0\r\n");
        // Counts, lists and errors are the same in both protocols.
        let argv: &[&[u8]] = &[b"COMMAND", b"COUNT"];
        assert_eq!(&command_reply(argv, b":240\r\n")[..], b":240\r\n");
        let argv: &[&[u8]] = &[b"COMMAND", b"INFO"];
        assert_eq!(&command_reply(argv, b"-ERR x\r\n")[..], b"-ERR x\r\n");
    }
}
