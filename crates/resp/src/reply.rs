//! Backend replies: where one complete RESP2/RESP3 reply ends.
//!
//! Types understood for framing: `+ - :` `$` `*` (RESP2, with `$-1` and `*-1` nulls) and
//! RESP3 `_ , # ( ! = ~ % > |`. A map `%N` holds 2N values; an attribute `|N` holds 2N
//! values and is followed by the value it describes, which belongs to the same reply.
//! Unlike the request decoder, this one is strict about CRLF: a backend that breaks the
//! protocol must be disconnected, not guessed at.

use memchr::memchr;

use crate::number::parse_i64;
use crate::{Limits, ReplyError};

/// A resumable reply decoder; keep one per backend connection.
///
/// It tracks nesting with one counter per open aggregate, never by building the reply.
///
/// # Memory
/// Nesting has no depth limit: any reply Redis can send is framed (a Lua script returns a
/// table nested about 8,000 levels deep), since a limit here would drop a connection that
/// other clients' requests share. The depth is bounded by the input instead: each open
/// aggregate costs 8 bytes of stack and took at least 4 bytes of input (`*1\r\n`), so the
/// stack holds at most twice the bytes the reply in progress has framed so far (plus the
/// vector's spare capacity; a stack over 4 KiB is freed when the reply ends).
/// The caller bounds it by bounding how far it lets one reply run: the bytes it holds plus
/// those it dropped through [`consume_framed`](Self::consume_framed).
///
/// # Skipping a large reply
/// [`consume_framed`](Self::consume_framed) says how many leading bytes of the buffer belong
/// to the reply in progress and are already framed; the caller may drop (or forward) them and
/// keep decoding the rest, so a reply of any size passes through a bounded buffer and the
/// connection stays in step:
///
/// ```
/// use resp::{Limits, ReplyDecoder};
///
/// let mut dec = ReplyDecoder::new(Limits::default());
/// let mut buf = b"*2\r\n$10\r\n0123".to_vec();
/// assert_eq!(dec.decode(&buf), Ok(None));
/// let n = dec.consume_framed(); // both headers and 4 payload bytes
/// assert_eq!(n, 13);
/// buf.drain(..n);
/// buf.extend_from_slice(b"456789\r\n:1\r\n+next\r\n");
/// assert_eq!(dec.decode(&buf), Ok(Some(12))); // the rest of the reply
/// ```
#[derive(Debug, Clone)]
pub struct ReplyDecoder {
    limits: Limits,
    /// Values still expected by each open aggregate, innermost last.
    stack: Vec<u64>,
    /// Start of the next frame header, or of the blob payload when `blob_end` is set.
    pos: usize,
    /// End (CRLF included) of the blob payload whose header was read.
    blob_end: Option<usize>,
    /// Bytes already searched for the CR ending the header line at `pos`.
    scan: usize,
    /// Length of the buffer at the last call.
    seen: usize,
}

/// Stack capacity kept between replies, in levels (4 KiB).
const MAX_KEPT_DEPTH: usize = 512;

/// What one header line amounts to.
enum Step {
    /// A value is complete.
    Value,
    /// An aggregate of this many values opens.
    Open(u64),
    /// A blob payload of this many bytes follows.
    Blob(usize),
}

impl ReplyDecoder {
    /// A decoder enforcing `limits` (only `max_bulk` applies to replies).
    pub fn new(limits: Limits) -> Self {
        ReplyDecoder {
            limits,
            stack: Vec::new(),
            pos: 0,
            blob_end: None,
            scan: 0,
            seen: 0,
        }
    }

    /// Forgets any partial reply.
    pub fn reset(&mut self) {
        if self.stack.capacity() > MAX_KEPT_DEPTH {
            // A deep reply must not leave its stack behind on a long-lived connection.
            self.stack = Vec::new();
        }
        self.stack.clear();
        self.pos = 0;
        self.blob_end = None;
        self.scan = 0;
        self.seen = 0;
    }

    /// Whether a reply has been started but not completed.
    pub fn is_partial(&self) -> bool {
        self.seen > 0 || !self.stack.is_empty() || self.blob_end.is_some()
    }

    /// How many leading bytes of the buffer last given to [`decode`](Self::decode) belong
    /// to the reply in progress and are already framed; 0 when no reply is in progress.
    ///
    /// The caller must remove exactly that many bytes from the front of its buffer before
    /// the next call to `decode` (it may forward them first); the decoder rebases its
    /// offsets to the shortened buffer. Framed bytes are every complete header line and
    /// every blob payload byte received so far, except a blob's final CRLF, which is kept
    /// to be checked; a header line still without its CRLF is kept. Lengths returned
    /// afterwards by `decode` count from the new buffer start, so the whole reply is the
    /// dropped bytes plus that length. Calling it does not change which replies are found
    /// or where they end.
    pub fn consume_framed(&mut self) -> usize {
        let framed = match self.blob_end {
            Some(end) => self.seen.min(end - 2),
            None => self.pos.min(self.seen),
        };
        if framed == 0 {
            return 0;
        }
        // Inside a blob the header offsets are behind the payload and are not read again
        // until the blob ends (then both are set to its end), so they may be clamped at 0.
        self.pos = self.pos.saturating_sub(framed);
        self.scan = self.scan.saturating_sub(framed);
        self.blob_end = self.blob_end.map(|end| end - framed);
        self.seen -= framed;
        framed
    }

    /// Bytes the current partial reply still needs at least, counted from the end of the
    /// buffer last given to [`decode`](Self::decode); 1 when that is not known. Use it to
    /// size a read, capped by the caller, never to allocate.
    pub fn min_needed(&self) -> usize {
        match self.blob_end {
            Some(end) => end.saturating_sub(self.seen).max(1),
            None => 1,
        }
    }

    /// Length of the one complete reply at the front of `buf`; `Ok(None)` if incomplete.
    ///
    /// After `Ok(None)`, call again with the same buffer start and more bytes appended;
    /// parsing resumes where it stopped. A buffer shorter than at the previous call is taken
    /// as a new buffer.
    ///
    /// # Errors
    /// A [`ReplyError`] if the bytes are not RESP or break a [`Limits`] bound. The decoder is
    /// then reset; the connection should be closed.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<usize>, ReplyError> {
        if buf.len() < self.seen {
            self.reset();
        }
        match self.run(buf) {
            Ok(Some(len)) => {
                self.reset();
                Ok(Some(len))
            }
            Ok(None) => {
                self.seen = buf.len();
                Ok(None)
            }
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    fn run(&mut self, buf: &[u8]) -> Result<Option<usize>, ReplyError> {
        loop {
            if let Some(end) = self.blob_end {
                let Some(tail) = buf.get(end - 2..end) else {
                    return Ok(None);
                };
                if tail != b"\r\n" {
                    return Err(ReplyError::MissingCrlf);
                }
                self.blob_end = None;
                self.pos = end;
            } else {
                let Some((step, next)) = self.header(buf)? else {
                    return Ok(None);
                };
                match step {
                    Step::Value => self.pos = next,
                    Step::Open(n) => {
                        // Unbounded on purpose: see "Memory" on the type.
                        self.stack.push(n);
                        self.pos = next;
                        self.scan = next;
                        continue;
                    }
                    Step::Blob(n) => {
                        self.pos = next;
                        // n <= max_bulk, so this only saturates on absurd limits.
                        self.blob_end = Some(next.saturating_add(n).saturating_add(2));
                        continue;
                    }
                }
            }
            self.scan = self.pos;
            if self.value_done() {
                return Ok(Some(self.pos));
            }
        }
    }

    /// Counts one finished value against the open aggregates; true when the reply is done.
    fn value_done(&mut self) -> bool {
        while let Some(left) = self.stack.last_mut() {
            *left -= 1;
            if *left > 0 {
                return false;
            }
            self.stack.pop();
        }
        true
    }

    /// Reads the header line at `self.pos`: what it is and where the next byte is.
    fn header(&mut self, buf: &[u8]) -> Result<Option<(Step, usize)>, ReplyError> {
        let Some(&kind) = buf.get(self.pos) else {
            return Ok(None);
        };
        let start = self.scan.max(self.pos + 1);
        let Some(cr) = buf.get(start..).and_then(|rest| memchr(b'\r', rest)) else {
            self.scan = buf.len();
            return Ok(None);
        };
        let cr = start + cr;
        self.scan = cr;
        match buf.get(cr + 1) {
            None => return Ok(None),
            Some(b'\n') => {}
            Some(_) => return Err(ReplyError::MissingCrlf),
        }
        let line = &buf[self.pos + 1..cr];
        let next = cr + 2;
        let step = match kind {
            b'+' | b'-' | b'_' | b',' | b'#' | b'(' => Step::Value,
            b':' => {
                parse_i64(line).ok_or(ReplyError::InvalidInteger)?;
                Step::Value
            }
            b'$' | b'!' | b'=' => match parse_i64(line).ok_or(ReplyError::InvalidLength)? {
                -1 if kind == b'$' => Step::Value,
                n => {
                    let n = u64::try_from(n).map_err(|_| ReplyError::InvalidLength)?;
                    let limit = self.limits.max_bulk;
                    match usize::try_from(n) {
                        Ok(len) if len <= limit => Step::Blob(len),
                        _ => return Err(ReplyError::BulkTooBig { len: n, limit }),
                    }
                }
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                match parse_i64(line).ok_or(ReplyError::InvalidLength)? {
                    -1 if kind == b'*' => Step::Value,
                    n => {
                        let n = u64::try_from(n).map_err(|_| ReplyError::InvalidLength)?;
                        let values = match kind {
                            b'%' => n.checked_mul(2),
                            b'|' => n.checked_mul(2).and_then(|v| v.checked_add(1)),
                            _ => Some(n),
                        };
                        match values.ok_or(ReplyError::InvalidLength)? {
                            0 => Step::Value,
                            v => Step::Open(v),
                        }
                    }
                }
            }
            other => return Err(ReplyError::UnknownType(other)),
        };
        Ok(Some((step, next)))
    }
}

/// Length of the one complete reply at the front of `buf`, with default [`Limits`].
///
/// # Errors
/// As [`ReplyDecoder::decode`].
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, ReplyError> {
    ReplyDecoder::new(Limits::default()).decode(buf)
}
