//! RESP codec for rampart: frame boundaries, not frame trees. No I/O.
//!
//! A proxy needs far less than a client library. For a request it needs where the request
//! ends, the command name and the argument bytes; for a reply it needs where the reply ends
//! and, when it merges the replies of a fanned-out command, a shallow look at the top level.
//! This crate gives exactly that, without allocating per request or copying arguments.
//!
//! # Layout
//! - [`request`]: [`RequestDecoder`], client requests (multibulk and inline), with Redis'
//!   own framing rules and error wording, so that the proxy and the backend never disagree
//!   about where a request ends.
//! - [`reply`]: [`ReplyDecoder`], the length of one complete RESP2/RESP3 reply, and how
//!   many bytes of a partial one are framed and may be dropped, to stream past a large reply.
//! - [`value`]: [`peek`], a top-level view of one complete reply, for merging.
//! - [`encode`]: append RESP frames to a [`bytes::BytesMut`].
//! - [`error`]: [`ProtocolError`] (requests) and [`ReplyError`] (replies).
//!
//! Both decoders are resumable: when a frame is incomplete they return `Ok(None)` and
//! remember how far they got, so a frame arriving in many small reads is scanned once.
//!
//! ```
//! use resp::{Limits, Request, RequestDecoder};
//!
//! let buf = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nPING\r\n";
//! let mut dec = RequestDecoder::new(Limits::default());
//! let req = dec.decode(buf).unwrap().unwrap();
//! assert_eq!(req.consumed(), 22);
//! assert_eq!(req.arg(buf, 0), Some(&b"GET"[..]));
//! assert_eq!(req.arg(buf, 1), Some(&b"key"[..]));
//! ```
#![forbid(unsafe_code)]

pub mod encode;
pub mod error;
mod inline;
mod number;
pub mod reply;
pub mod request;
pub mod value;

pub use error::{ProtocolError, ReplyError};
pub use reply::ReplyDecoder;
pub use request::{Request, RequestDecoder};
pub use value::{peek, Value};

/// Size limits that protect the proxy from hostile or broken peers.
///
/// The defaults are Redis' own: `proto-max-bulk-len` (512 MiB), 1024 * 1024 arguments per
/// multibulk request and 64 KiB for an inline request or a header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string accepted, in bytes.
    pub max_bulk: usize,
    /// Largest argument count of a multibulk request.
    pub max_multibulk: usize,
    /// Largest inline request, and largest `*<count>` / `$<len>` header line, in bytes,
    /// while its terminator has not arrived yet.
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 * 1024 * 1024,
            max_multibulk: 1024 * 1024,
            max_inline: 64 * 1024,
        }
    }
}
