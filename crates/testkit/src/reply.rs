//! The reply type of the test client and a blocking RESP reader for it.
//!
//! The client speaks RESP2. RESP3 replies (after `HELLO 3`) are folded into the RESP2
//! shapes so tests can still inspect them: null -> `Bulk(None)`, boolean -> `Int(0|1)`,
//! double and big number -> `Simple`, map / set / push / attribute -> `Array`
//! (a map as a flat key, value, key, value list), verbatim string -> `Bulk`,
//! blob error -> `Error`.

use std::fmt;
use std::io::{self, BufRead};

/// One decoded reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`: a simple string.
    Simple(String),
    /// `-ERR ...`: an error reply, without the leading `-`.
    Error(String),
    /// `:42`: a signed integer.
    Int(i64),
    /// `$3 foo`; `None` is the null bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`; `None` is the null array `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The `+OK` reply.
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_string())
    }

    /// A simple-string reply, for comparisons in tests.
    pub fn simple(s: &str) -> Reply {
        Reply::Simple(s.to_string())
    }

    /// A non-null bulk reply holding `data`, for comparisons in tests.
    pub fn bulk(data: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(Some(data.as_ref().to_vec()))
    }

    /// The null bulk reply `$-1`.
    pub fn nil() -> Reply {
        Reply::Bulk(None)
    }

    /// An array of non-null bulk replies, for comparisons in tests.
    pub fn bulks<I: IntoIterator<Item = B>, B: AsRef<[u8]>>(items: I) -> Reply {
        Reply::Array(Some(items.into_iter().map(Reply::bulk).collect()))
    }

    /// True for an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The bytes of a bulk or simple string reply.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Simple(s) => Some(s.as_bytes()),
            Reply::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// The text of a bulk, simple or error reply, when it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Error(s) => Some(s),
            other => other.as_bytes().and_then(|b| std::str::from_utf8(b).ok()),
        }
    }

    /// The value of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements of a non-null array reply.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }
}

impl fmt::Debug for Reply {
    /// Prints bulk data as text where possible so failed assertions are readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "Simple({s:?})"),
            Reply::Error(s) => write!(f, "Error({s:?})"),
            Reply::Int(i) => write!(f, "Int({i})"),
            Reply::Bulk(None) => write!(f, "Bulk(nil)"),
            Reply::Bulk(Some(b)) => write!(f, "Bulk({:?})", String::from_utf8_lossy(b)),
            Reply::Array(None) => write!(f, "Array(nil)"),
            Reply::Array(Some(items)) => f.debug_tuple("Array").field(items).finish(),
        }
    }
}

/// Why a reply could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The first byte is not a RESP type marker.
    #[error("unknown reply type byte {0:#04x}")]
    UnknownType(u8),
    /// A header line did not end in CRLF.
    #[error("reply line does not end in CRLF")]
    MissingCrlf,
    /// A length or integer header is not a number.
    #[error("bad number in reply header: {0:?}")]
    BadNumber(String),
    /// A bulk payload is not followed by CRLF.
    #[error("bulk payload is not followed by CRLF")]
    BadBulkEnd,
    /// The peer closed the connection before a whole reply arrived.
    #[error("connection closed by peer")]
    Closed,
}

impl From<ReplyError> for io::Error {
    fn from(e: ReplyError) -> io::Error {
        let kind = match e {
            ReplyError::Closed => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Encodes one command as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one complete reply, blocking until it has arrived.
///
/// # Errors
/// I/O errors (including read timeouts) from `r`, and [`ReplyError`] for malformed input.
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(r)?;
    let (&kind, rest) = line.split_first().ok_or(ReplyError::MissingCrlf)?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(match kind {
        b'+' | b',' | b'(' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(parse_num(rest)?),
        b'#' => Reply::Int(i64::from(rest == b"t")),
        b'_' => Reply::Bulk(None),
        b'$' | b'=' => Reply::Bulk(read_bulk(r, parse_num(rest)?)?),
        b'!' => {
            let body = read_bulk(r, parse_num(rest)?)?.unwrap_or_default();
            Reply::Error(String::from_utf8_lossy(&body).into_owned())
        }
        b'*' | b'~' | b'>' | b'|' => Reply::Array(read_items(r, parse_num(rest)?)?),
        b'%' => Reply::Array(read_items(r, parse_num(rest)?.saturating_mul(2))?),
        other => return Err(ReplyError::UnknownType(other).into()),
    })
}

fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(ReplyError::Closed.into());
    }
    if !line.ends_with(b"\r\n") {
        return Err(if line.ends_with(b"\n") {
            ReplyError::MissingCrlf
        } else {
            ReplyError::Closed
        }
        .into());
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_num(s: &[u8]) -> Result<i64, ReplyError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ReplyError::BadNumber(String::from_utf8_lossy(s).into_owned()))
}

fn read_bulk(r: &mut impl BufRead, len: i64) -> io::Result<Option<Vec<u8>>> {
    let Ok(len) = usize::try_from(len) else {
        return Ok(None);
    };
    let mut buf = vec![0; len + 2];
    r.read_exact(&mut buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReplyError::Closed.into(),
        _ => e,
    })?;
    if !buf.ends_with(b"\r\n") {
        return Err(ReplyError::BadBulkEnd.into());
    }
    buf.truncate(len);
    Ok(Some(buf))
}

fn read_items(r: &mut impl BufRead, n: i64) -> io::Result<Option<Vec<Reply>>> {
    let Ok(n) = usize::try_from(n) else {
        return Ok(None);
    };
    (0..n)
        .map(|_| read_reply(r))
        .collect::<io::Result<_>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> io::Result<Reply> {
        read_reply(&mut io::Cursor::new(input))
    }

    #[test]
    fn encodes_a_command_as_an_array_of_bulks() {
        assert_eq!(
            encode_command(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn decodes_every_resp2_type() {
        assert_eq!(decode(b"+OK\r\n").unwrap(), Reply::ok());
        assert_eq!(
            decode(b"-ERR no\r\n").unwrap(),
            Reply::Error("ERR no".into())
        );
        assert_eq!(decode(b":-7\r\n").unwrap(), Reply::Int(-7));
        assert_eq!(decode(b"$-1\r\n").unwrap(), Reply::nil());
        assert_eq!(decode(b"$4\r\na\r\nb\r\n").unwrap(), Reply::bulk("a\r\nb"));
        assert_eq!(decode(b"*-1\r\n").unwrap(), Reply::Array(None));
        assert_eq!(
            decode(b"*2\r\n$1\r\nx\r\n:1\r\n").unwrap(),
            Reply::Array(Some(vec![Reply::bulk("x"), Reply::Int(1)]))
        );
    }

    #[test]
    fn folds_resp3_types_into_resp2_shapes() {
        assert_eq!(decode(b"_\r\n").unwrap(), Reply::nil());
        assert_eq!(decode(b"#t\r\n").unwrap(), Reply::Int(1));
        assert_eq!(
            decode(b"%1\r\n+a\r\n:2\r\n").unwrap(),
            Reply::Array(Some(vec![Reply::simple("a"), Reply::Int(2)]))
        );
    }

    #[test]
    fn reports_truncated_and_malformed_input() {
        let eof = decode(b"$5\r\nab").unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            decode(b"").unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            decode(b"?x\r\n").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            decode(b":x\r\n").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            decode(b"$1\r\nab\r\n").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
