//! A shallow, top-level view of one complete reply, for merging the replies of a command
//! that was split across shards (MGET arrays by position, DEL counts summed, MSET all-OK).

use crate::number::parse_i64;
use crate::reply::reply_len;
use crate::ReplyError;

/// Top-level view of one complete reply. Slices point into the reply; nothing is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// `+<text>`: the text.
    Simple(&'a [u8]),
    /// `-<text>`: the full error text, e.g. `ERR wrong type`.
    Error(&'a [u8]),
    /// `:<n>`.
    Integer(i64),
    /// `$<len>`: the payload, or `None` for the null bulk `$-1`.
    Bulk(Option<&'a [u8]>),
    /// `*<n>`: the raw bytes of each element, each a complete frame; `None` for `*-1`.
    Array(Option<Vec<&'a [u8]>>),
    /// Any RESP3 type (null, double, boolean, big number, verbatim, map, set, push, ...).
    Other,
}

/// Looks at the one complete reply at the front of `reply` (bytes after it are ignored).
///
/// # Errors
/// [`ReplyError::Incomplete`] if `reply` does not start with a complete reply, or any error
/// [`crate::ReplyDecoder`] reports for malformed bytes (default [`crate::Limits`]).
pub fn peek(reply: &[u8]) -> Result<Value<'_>, ReplyError> {
    let len = reply_len(reply)?.ok_or(ReplyError::Incomplete)?;
    let frame = &reply[..len];
    // A complete frame has a header line ending in CRLF, so these searches succeed.
    let Some(cr) = memchr::memchr(b'\r', frame) else {
        return Err(ReplyError::MissingCrlf);
    };
    let line = &frame[1..cr];
    let body = cr + 2;
    Ok(match frame[0] {
        b'+' => Value::Simple(line),
        b'-' => Value::Error(line),
        b':' => Value::Integer(parse_i64(line).ok_or(ReplyError::InvalidInteger)?),
        b'$' if line == b"-1" => Value::Bulk(None),
        b'$' => Value::Bulk(frame.get(body..len - 2)),
        b'*' if line == b"-1" => Value::Array(None),
        b'*' => {
            let mut elements = Vec::new();
            let mut pos = body;
            while pos < len {
                let rest = &frame[pos..];
                let n = reply_len(rest)?.ok_or(ReplyError::Incomplete)?;
                elements.push(&rest[..n]);
                pos += n;
            }
            Value::Array(Some(elements))
        }
        _ => Value::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_types() {
        assert_eq!(peek(b"+OK\r\n"), Ok(Value::Simple(b"OK")));
        assert_eq!(peek(b"-ERR no\r\n"), Ok(Value::Error(b"ERR no")));
        assert_eq!(peek(b":-12\r\n"), Ok(Value::Integer(-12)));
        assert_eq!(peek(b"$3\r\na\rb\r\n"), Ok(Value::Bulk(Some(b"a\rb"))));
        assert_eq!(peek(b"$0\r\n\r\n"), Ok(Value::Bulk(Some(b""))));
        assert_eq!(peek(b"$-1\r\n"), Ok(Value::Bulk(None)));
        assert_eq!(peek(b"*-1\r\n"), Ok(Value::Array(None)));
        assert_eq!(peek(b"*0\r\n"), Ok(Value::Array(Some(vec![]))));
    }

    #[test]
    fn array_elements_are_complete_frames() {
        let reply = b"*4\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n*0\r\n_\r\n+tail\r\n";
        assert_eq!(
            peek(reply),
            Ok(Value::Array(Some(vec![
                &b"$1\r\na\r\n"[..],
                b"$-1\r\n",
                b"*2\r\n:1\r\n*0\r\n",
                b"_\r\n",
            ])))
        );
    }

    #[test]
    fn resp3_is_other() {
        for reply in [
            &b"_\r\n"[..],
            b",1.5\r\n",
            b"#t\r\n",
            b"(123\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"!3\r\nerr\r\n",
            b"%1\r\n+a\r\n:1\r\n",
            b"~1\r\n+a\r\n",
            b">2\r\n+message\r\n+x\r\n",
        ] {
            assert_eq!(peek(reply), Ok(Value::Other));
        }
    }

    #[test]
    fn incomplete_and_malformed() {
        assert_eq!(peek(b""), Err(ReplyError::Incomplete));
        assert_eq!(peek(b"+OK\r"), Err(ReplyError::Incomplete));
        assert_eq!(peek(b"*2\r\n:1\r\n"), Err(ReplyError::Incomplete));
        assert_eq!(peek(b":1x\r\n"), Err(ReplyError::InvalidInteger));
        assert_eq!(peek(b"?\r\n"), Err(ReplyError::UnknownType(b'?')));
    }
}
