//! Appending RESP2 and RESP3 frames to a [`BytesMut`].
//!
//! Simple strings and errors cannot carry CR or LF; like Redis, these functions write such
//! bytes as spaces so that a reply can never break the framing of the stream.

use bytes::{BufMut, BytesMut};

/// Appends `+<s>\r\n`.
pub fn simple(out: &mut BytesMut, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.put_u8(b'+');
    put_line(out, s);
}

/// Appends an error reply `-<msg>\r\n`; `msg` is the full text, e.g. `"ERR unknown command"`.
pub fn error(out: &mut BytesMut, msg: &str) {
    out.reserve(msg.len() + 3);
    out.put_u8(b'-');
    put_line(out, msg.as_bytes());
}

/// Appends `:<n>\r\n`.
pub fn integer(out: &mut BytesMut, n: i64) {
    header(out, b':', itoa::Buffer::new().format(n));
}

/// Appends the bulk string `$<len>\r\n<data>\r\n`.
pub fn bulk(out: &mut BytesMut, data: &[u8]) {
    let mut digits = itoa::Buffer::new();
    let len = digits.format(data.len());
    out.reserve(len.len() + data.len() + 5);
    header(out, b'$', len);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends the RESP2 null bulk string `$-1\r\n`.
pub fn null_bulk(out: &mut BytesMut) {
    out.put_slice(b"$-1\r\n");
}

/// Appends `*<n>\r\n`; the caller then appends `n` elements.
pub fn array_header(out: &mut BytesMut, n: usize) {
    header(out, b'*', itoa::Buffer::new().format(n));
}

/// Appends the RESP2 null array `*-1\r\n`.
pub fn null_array(out: &mut BytesMut) {
    out.put_slice(b"*-1\r\n");
}

/// Appends the RESP3 map header `%<n>\r\n`; the caller then appends `n` key/value pairs
/// (`2n` values).
pub fn map_header(out: &mut BytesMut, n: usize) {
    header(out, b'%', itoa::Buffer::new().format(n));
}

/// Appends the RESP3 set header `~<n>\r\n`; the caller then appends `n` elements.
pub fn set_header(out: &mut BytesMut, n: usize) {
    header(out, b'~', itoa::Buffer::new().format(n));
}

/// Appends the RESP3 null `_\r\n`.
pub fn null(out: &mut BytesMut) {
    out.put_slice(b"_\r\n");
}

/// Appends the null a client of protocol `resp3` expects for a missing string: `_\r\n`
/// (RESP3) or `$-1\r\n` (RESP2).
pub fn null_for(out: &mut BytesMut, resp3: bool) {
    if resp3 {
        null(out)
    } else {
        null_bulk(out)
    }
}

/// Appends the RESP3 boolean `#t\r\n` or `#f\r\n`.
pub fn boolean(out: &mut BytesMut, b: bool) {
    out.put_slice(if b { b"#t\r\n" } else { b"#f\r\n" });
}

/// Appends the RESP3 double `,<v>\r\n`: `inf`, `-inf`, `nan`, else the shortest text that
/// reads back as the same value (`1.5`, `3`), in exponent form past 17 digits (`1e+300`).
pub fn double(out: &mut BytesMut, v: f64) {
    let text = if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        let plain = format!("{v}");
        if plain.trim_start_matches('-').len() > 17 {
            format!("{v:e}").replace('e', "e+").replace("e+-", "e-")
        } else {
            plain
        }
    };
    header(out, b',', &text);
}

/// Appends the RESP3 verbatim string `=<len>\r\n<fmt>:<data>\r\n`; `fmt` is the three-byte
/// format, `txt` (plain text, what INFO uses) or `mkd` (markdown).
pub fn verbatim(out: &mut BytesMut, fmt: &[u8; 3], data: &[u8]) {
    let mut digits = itoa::Buffer::new();
    let len = digits.format(data.len() + 4);
    out.reserve(len.len() + data.len() + 9);
    header(out, b'=', len);
    out.put_slice(fmt);
    out.put_u8(b':');
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends the text a client reads with INFO: a verbatim `txt` string for RESP3, a bulk
/// string for RESP2 (as Redis answers INFO, CLIENT INFO, CLIENT LIST).
pub fn text_for(out: &mut BytesMut, resp3: bool, data: &[u8]) {
    if resp3 {
        verbatim(out, b"txt", data)
    } else {
        bulk(out, data)
    }
}

/// Appends a request as a multibulk: `*<n>\r\n` then each argument as a bulk string.
pub fn command(out: &mut BytesMut, args: &[&[u8]]) {
    command_from(out, args.iter().copied());
}

/// Like [`command`], for arguments that come from an iterator (for example the keys of one
/// fragment of a multi-key command).
pub fn command_from<'a, I>(out: &mut BytesMut, args: I)
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: ExactSizeIterator,
{
    let args = args.into_iter();
    array_header(out, args.len());
    for arg in args {
        bulk(out, arg);
    }
}

fn header(out: &mut BytesMut, kind: u8, digits: &str) {
    out.reserve(digits.len() + 3);
    out.put_u8(kind);
    out.put_slice(digits.as_bytes());
    out.put_slice(b"\r\n");
}

fn put_line(out: &mut BytesMut, s: &[u8]) {
    if memchr::memchr2(b'\r', b'\n', s).is_none() {
        out.put_slice(s);
    } else {
        out.extend(
            s.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn frames_are_byte_exact() {
        assert_eq!(b"+OK\r\n".to_vec(), enc(|o| simple(o, b"OK")));
        assert_eq!(b"+a  b\r\n".to_vec(), enc(|o| simple(o, b"a\r\nb")));
        assert_eq!(b"-ERR x\r\n".to_vec(), enc(|o| error(o, "ERR x")));
        assert_eq!(b"-ERR a b\r\n".to_vec(), enc(|o| error(o, "ERR a\nb")));
        assert_eq!(b":0\r\n".to_vec(), enc(|o| integer(o, 0)));
        assert_eq!(b":-42\r\n".to_vec(), enc(|o| integer(o, -42)));
        assert_eq!(
            b":-9223372036854775808\r\n".to_vec(),
            enc(|o| integer(o, i64::MIN))
        );
        assert_eq!(b"$0\r\n\r\n".to_vec(), enc(|o| bulk(o, b"")));
        assert_eq!(b"$5\r\na\r\nbc\r\n".to_vec(), enc(|o| bulk(o, b"a\r\nbc")));
        assert_eq!(b"$-1\r\n".to_vec(), enc(null_bulk));
        assert_eq!(b"*0\r\n".to_vec(), enc(|o| array_header(o, 0)));
        assert_eq!(b"*12\r\n".to_vec(), enc(|o| array_header(o, 12)));
        assert_eq!(b"*-1\r\n".to_vec(), enc(null_array));
        assert_eq!(
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".to_vec(),
            enc(|o| command(o, &[b"SET", b"k", b""]))
        );
        assert_eq!(
            b"*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n".to_vec(),
            enc(|o| command_from(o, [&b"DEL"[..], b"k"]))
        );
    }

    #[test]
    fn resp3_frames_are_byte_exact() {
        assert_eq!(b"%2\r\n".to_vec(), enc(|o| map_header(o, 2)));
        assert_eq!(b"~0\r\n".to_vec(), enc(|o| set_header(o, 0)));
        assert_eq!(b"_\r\n".to_vec(), enc(null));
        assert_eq!(b"_\r\n".to_vec(), enc(|o| null_for(o, true)));
        assert_eq!(b"$-1\r\n".to_vec(), enc(|o| null_for(o, false)));
        assert_eq!(
            b"#t\r\n#f\r\n".to_vec(),
            enc(|o| {
                boolean(o, true);
                boolean(o, false)
            })
        );
        assert_eq!(b",1.5\r\n".to_vec(), enc(|o| double(o, 1.5)));
        assert_eq!(b",3\r\n".to_vec(), enc(|o| double(o, 3.0)));
        assert_eq!(b",-inf\r\n".to_vec(), enc(|o| double(o, f64::NEG_INFINITY)));
        assert_eq!(
            b"=7\r\ntxt:abc\r\n".to_vec(),
            enc(|o| verbatim(o, b"txt", b"abc"))
        );
        assert_eq!(b"=4\r\ntxt:\r\n".to_vec(), enc(|o| text_for(o, true, b"")));
        assert_eq!(
            b"$3\r\nabc\r\n".to_vec(),
            enc(|o| text_for(o, false, b"abc"))
        );
    }

    #[test]
    fn appends_after_existing_bytes() {
        let mut out = BytesMut::from(&b"+A\r\n"[..]);
        integer(&mut out, 7);
        assert_eq!(&out[..], b"+A\r\n:7\r\n");
    }
}
