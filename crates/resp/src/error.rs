//! Decode errors: one enum for client requests, one for backend replies.

use bytes::{BufMut, BytesMut};

/// A client sent bytes that Redis itself would refuse.
///
/// `Display` gives Redis' exact wording without the `ERR ` prefix; [`ProtocolError::reply`]
/// writes the complete error reply. After any of these, Redis replies and closes the
/// connection, and so should the proxy: the stream can no longer be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The `*<count>` line is not an integer or the count is above `Limits::max_multibulk`.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// The `$<len>` line is not an integer, is negative or is above `Limits::max_bulk`.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An argument of a multibulk request does not start with `$`.
    ///
    /// Like Redis, the reply text shows a CR or LF byte as a space so the reply stays one line.
    #[error("Protocol error: expected '$', got '{}'", printable(*got))]
    ExpectedDollar {
        /// The byte found instead of `$`.
        got: u8,
    },
    /// More than `limit` bytes of an inline request arrived without its newline.
    #[error("Protocol error: too big inline request")]
    TooBigInline {
        /// The `Limits::max_inline` that was exceeded.
        limit: usize,
    },
    /// More than `limit` bytes of a `*<count>` line arrived without its CR.
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount {
        /// The `Limits::max_inline` that was exceeded.
        limit: usize,
    },
    /// More than `limit` bytes of a `$<len>` line arrived without its CR.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount {
        /// The `Limits::max_inline` that was exceeded.
        limit: usize,
    },
    /// An inline request has an unterminated quote, or a closing quote followed by
    /// something other than a space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

impl ProtocolError {
    /// Appends the error reply Redis sends for this error: `-ERR <message>\r\n`.
    ///
    /// Unlike `to_string()`, this writes the offending byte of
    /// [`ProtocolError::ExpectedDollar`] as the raw byte, as Redis does.
    pub fn reply(&self, out: &mut BytesMut) {
        out.put_slice(b"-ERR ");
        match self {
            ProtocolError::ExpectedDollar { got } => {
                out.put_slice(b"Protocol error: expected '$', got '");
                out.put_u8(if matches!(got, b'\r' | b'\n') {
                    b' '
                } else {
                    *got
                });
                out.put_u8(b'\'');
            }
            other => out.put_slice(other.to_string().as_bytes()),
        }
        out.put_slice(b"\r\n");
    }
}

/// The byte as Redis prints it in an error line: CR and LF become spaces, other bytes are
/// shown as the character with that code.
fn printable(b: u8) -> char {
    match b {
        b'\r' | b'\n' => ' ',
        other => char::from(other),
    }
}

/// A backend sent bytes that are not a well-formed RESP2/RESP3 reply.
///
/// The connection that produced it cannot be trusted any more and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The first byte of a frame is not a known RESP type.
    #[error("invalid reply: unknown type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A length or count is not an integer, or is negative where only `-1` (null) or nothing
    /// is allowed.
    #[error("invalid reply: bad length or count")]
    InvalidLength,
    /// An integer reply is not a valid signed 64-bit integer.
    #[error("invalid reply: bad integer")]
    InvalidInteger,
    /// A line or a bulk payload is not terminated by CRLF.
    #[error("invalid reply: missing CRLF")]
    MissingCrlf,
    /// A bulk payload is longer than `Limits::max_bulk`.
    #[error("invalid reply: bulk of {len} bytes is over the {limit}-byte limit")]
    BulkTooBig {
        /// The declared length.
        len: u64,
        /// The `Limits::max_bulk` that was exceeded.
        limit: usize,
    },
    /// [`crate::peek`] was given less than one complete reply.
    #[error("invalid reply: incomplete")]
    Incomplete,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_redis_wording() {
        assert_eq!(
            ProtocolError::InvalidMultibulkLength.to_string(),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            ProtocolError::InvalidBulkLength.to_string(),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar { got: b'f' }.to_string(),
            "Protocol error: expected '$', got 'f'"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar { got: b'\r' }.to_string(),
            "Protocol error: expected '$', got ' '"
        );
        assert_eq!(
            ProtocolError::TooBigInline { limit: 1 }.to_string(),
            "Protocol error: too big inline request"
        );
        assert_eq!(
            ProtocolError::TooBigMultibulkCount { limit: 1 }.to_string(),
            "Protocol error: too big mbulk count string"
        );
        assert_eq!(
            ProtocolError::TooBigBulkCount { limit: 1 }.to_string(),
            "Protocol error: too big bulk count string"
        );
        assert_eq!(
            ProtocolError::UnbalancedQuotes.to_string(),
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn reply_is_byte_exact() {
        let mut out = BytesMut::new();
        ProtocolError::InvalidBulkLength.reply(&mut out);
        assert_eq!(&out[..], b"-ERR Protocol error: invalid bulk length\r\n");
        out.clear();
        ProtocolError::ExpectedDollar { got: 0xff }.reply(&mut out);
        assert_eq!(
            &out[..],
            b"-ERR Protocol error: expected '$', got '\xff'\r\n"
        );
        out.clear();
        ProtocolError::ExpectedDollar { got: b'\n' }.reply(&mut out);
        assert_eq!(&out[..], b"-ERR Protocol error: expected '$', got ' '\r\n");
    }
}
