//! Client requests: RESP multibulk (`*N\r\n$L\r\n...`) and inline (telnet) lines.
//!
//! The framing rules are Redis' own (7.0 `processMultibulkBuffer` / `processInlineBuffer`),
//! including its leniencies, because the proxy forwards request bytes to Redis: if the two
//! disagreed about where a request ends, a client could smuggle a second request past the
//! proxy's routing. In particular:
//!
//! - a request starting with `*` is multibulk, anything else is inline;
//! - a header line ends at its CR; the byte after the CR is skipped without being checked,
//!   and so are the two bytes after a bulk payload;
//! - a NUL byte before a line's terminator hides the terminator (Redis searches with
//!   `strchr`), so such a line stays incomplete until it exceeds `Limits::max_inline`;
//! - `*0` and negative counts are accepted and give a request with no arguments, which
//!   the caller skips; so does an empty or all-blank inline line.

use std::ops::Range;

use memchr::memchr2;

use crate::inline::split_args;
use crate::number::parse_i64;
use crate::{Limits, ProtocolError};

/// One decoded request. Arguments of a multibulk request are byte ranges into the buffer
/// passed to [`RequestDecoder::decode`], so nothing is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// RESP multibulk: `args[i]` is the byte range of argument i inside the input buffer.
    Multibulk {
        /// Bytes consumed from the front of the buffer.
        len: usize,
        /// Byte range of each argument inside the buffer.
        args: &'a [Range<usize>],
    },
    /// Inline (telnet) command, split like Redis' `sdssplitargs`; the arguments are owned
    /// because quotes and escapes change the bytes.
    Inline {
        /// Bytes consumed from the front of the buffer, line terminator included.
        len: usize,
        /// The arguments after unquoting.
        args: Vec<Vec<u8>>,
    },
}

impl<'a> Request<'a> {
    /// Bytes this request takes at the front of the buffer.
    pub fn consumed(&self) -> usize {
        match self {
            Request::Multibulk { len, .. } | Request::Inline { len, .. } => *len,
        }
    }

    /// Number of arguments, command name included. Zero means "nothing to do".
    pub fn argc(&self) -> usize {
        match self {
            Request::Multibulk { args, .. } => args.len(),
            Request::Inline { args, .. } => args.len(),
        }
    }

    /// Argument `i` (0 is the command name); `buf` is the buffer the request was decoded from.
    pub fn arg<'b>(&'b self, buf: &'b [u8], i: usize) -> Option<&'b [u8]> {
        match self {
            Request::Multibulk { args, .. } => buf.get(args.get(i)?.clone()),
            Request::Inline { args, .. } => args.get(i).map(Vec::as_slice),
        }
    }

    /// The command name as sent (not case-folded), if there is one.
    pub fn name<'b>(&'b self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.arg(buf, 0)
    }

    /// All arguments in order; `buf` is the buffer the request was decoded from.
    pub fn args<'b>(&'b self, buf: &'b [u8]) -> impl Iterator<Item = &'b [u8]> + 'b {
        (0..self.argc()).filter_map(move |i| self.arg(buf, i))
    }
}

/// Progress inside the current, still incomplete request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the end of the first line (an inline request or a `*N` line).
    Start(Scan),
    /// Inside a multibulk request.
    Multibulk(Multibulk),
}

/// Where a search for a line terminator stands, so that it never looks at a byte twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Scan {
    /// Bytes of the buffer already searched.
    upto: usize,
    /// A NUL came first: the terminator will never be found (Redis' `strchr` stops there).
    blocked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Multibulk {
    /// Arguments still to read.
    left: usize,
    /// Start of the next `$L` line, or of the payload when `bulk` is known.
    pos: usize,
    /// Length of the payload at `pos`, once its `$L` line has been read.
    bulk: Option<usize>,
    /// Search progress for the `$L` line at `pos`.
    scan: Scan,
}

/// A resumable request decoder; keep one per client connection.
///
/// Call [`decode`](Self::decode) with the client's buffer; on `Ok(Some(request))` drop
/// `request.consumed()` bytes from the front and call again; on `Ok(None)` read more bytes,
/// append them, and call again with the same buffer start. On an error, reply with
/// [`ProtocolError::reply`] and close the connection.
#[derive(Debug, Clone)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    /// Reused storage for argument ranges: no allocation per request once warm.
    args: Vec<Range<usize>>,
    /// Length of the buffer at the last call.
    seen: usize,
    /// The client has not authenticated: Redis' tighter limits apply (see
    /// [`RequestDecoder::set_unauthenticated`]).
    unauthenticated: bool,
}

/// Most arguments Redis accepts in one request from a client that has not authenticated.
pub const UNAUTHENTICATED_MULTIBULK: usize = 10;
/// Longest argument, in bytes, Redis accepts from a client that has not authenticated.
pub const UNAUTHENTICATED_BULK: usize = 16 * 1024;

/// Argument storage above this many ranges is released before the next request, so that
/// one huge request does not pin memory for the life of the connection.
const ARGS_KEEP: usize = 1024;

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            state: State::Start(Scan::default()),
            args: Vec::new(),
            seen: 0,
            unauthenticated: false,
        }
    }

    /// Whether the client has yet to authenticate. While it has, requests are held to
    /// Redis' limits for such clients: at most [`UNAUTHENTICATED_MULTIBULK`] arguments and
    /// [`UNAUTHENTICATED_BULK`] bytes per argument (or the decoder's own limits, if smaller),
    /// refused with [`ProtocolError::UnauthenticatedMultibulkLength`] and
    /// [`ProtocolError::UnauthenticatedBulkLength`]. Off for a new decoder; change it only
    /// between requests.
    pub fn set_unauthenticated(&mut self, on: bool) {
        self.unauthenticated = on;
    }

    /// Whether the limits for clients that have not authenticated apply.
    pub fn is_unauthenticated(&self) -> bool {
        self.unauthenticated
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets any partial request (for example after the caller discarded its buffer).
    pub fn reset(&mut self) {
        self.state = State::Start(Scan::default());
        self.args.clear();
        self.seen = 0;
    }

    /// Whether a request has been started but not completed.
    pub fn is_partial(&self) -> bool {
        self.seen > 0
    }

    /// Bytes the current partial request still needs at least, counted from the end of the
    /// buffer last given to [`decode`](Self::decode); 1 when that is not known.
    ///
    /// This follows a length declared by the client, up to 512 MiB by default: use it to
    /// size a read, capped by the caller, never to allocate.
    pub fn min_needed(&self) -> usize {
        match self.state {
            State::Multibulk(Multibulk {
                pos, bulk: Some(n), ..
            }) => pos
                .saturating_add(n)
                .saturating_add(2)
                .saturating_sub(self.seen)
                .max(1),
            _ => 1,
        }
    }

    /// Decodes one request from the front of `buf`.
    ///
    /// `Ok(None)` means the request is incomplete: call again later with the same buffer
    /// start and more bytes appended; parsing resumes where it stopped. A buffer shorter
    /// than at the previous call is taken as a new buffer.
    ///
    /// # Errors
    /// A [`ProtocolError`] when the bytes break Redis' request protocol or a [`Limits`]
    /// bound. The decoder is then reset; the connection should be closed.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<Request<'_>>, ProtocolError> {
        if buf.len() < self.seen {
            self.reset();
        }
        let state = match self.state {
            State::Start(scan) => match buf.first() {
                None => return Ok(None),
                Some(b'*') => match self.multibulk_header(buf, scan) {
                    Ok(Some(mb)) => mb,
                    Ok(None) => return self.pause(buf, None),
                    Err(e) => return self.fail(e),
                },
                Some(_) => return self.inline(buf, scan),
            },
            State::Multibulk(mb) => mb,
        };
        if state.left == 0 {
            self.done();
            return Ok(Some(Request::Multibulk {
                len: state.pos,
                args: &[],
            }));
        }
        match self.multibulk_args(buf, state) {
            Ok(Some(len)) => {
                self.done();
                Ok(Some(Request::Multibulk {
                    len,
                    args: &self.args,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => self.fail(e),
        }
    }

    /// Reads the `*N` line. `Ok(None)`: incomplete, with `scan` saved in `self.state`.
    fn multibulk_header(
        &mut self,
        buf: &[u8],
        mut scan: Scan,
    ) -> Result<Option<Multibulk>, ProtocolError> {
        let Some(cr) = find(buf, 0, &mut scan, b'\r') else {
            self.state = State::Start(scan);
            if buf.len() > self.limits.max_inline {
                let limit = self.limits.max_inline;
                return Err(ProtocolError::TooBigMultibulkCount { limit });
            }
            return Ok(None);
        };
        if cr + 1 >= buf.len() {
            self.state = State::Start(scan);
            return Ok(None);
        }
        let count = parse_i64(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
        let left = if count <= 0 {
            0
        } else {
            usize::try_from(count)
                .ok()
                .filter(|&n| n <= self.limits.max_multibulk)
                .ok_or(ProtocolError::InvalidMultibulkLength)?
        };
        if self.unauthenticated && left > UNAUTHENTICATED_MULTIBULK {
            return Err(ProtocolError::UnauthenticatedMultibulkLength);
        }
        if self.args.capacity() > ARGS_KEEP {
            self.args = Vec::new();
        }
        self.args.clear();
        let pos = cr + 2;
        Ok(Some(Multibulk {
            left,
            pos,
            bulk: None,
            scan: Scan {
                upto: pos,
                blocked: false,
            },
        }))
    }

    /// Reads arguments until the request is complete (`Ok(Some(total length))`) or the
    /// buffer runs out (`Ok(None)`, progress saved in `self.state`).
    fn multibulk_args(
        &mut self,
        buf: &[u8],
        mut mb: Multibulk,
    ) -> Result<Option<usize>, ProtocolError> {
        while mb.left > 0 {
            let len = match mb.bulk {
                Some(len) => len,
                None => {
                    let Some(cr) = find(buf, mb.pos, &mut mb.scan, b'\r') else {
                        if buf.len() - mb.pos > self.limits.max_inline {
                            let limit = self.limits.max_inline;
                            return Err(ProtocolError::TooBigBulkCount { limit });
                        }
                        return self.pause(buf, Some(mb));
                    };
                    if cr + 1 >= buf.len() {
                        return self.pause(buf, Some(mb));
                    }
                    if buf[mb.pos] != b'$' {
                        return Err(ProtocolError::ExpectedDollar { got: buf[mb.pos] });
                    }
                    let len = parse_i64(&buf[mb.pos + 1..cr])
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|&n| n <= self.limits.max_bulk)
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    if self.unauthenticated && len > UNAUTHENTICATED_BULK {
                        return Err(ProtocolError::UnauthenticatedBulkLength);
                    }
                    mb.pos = cr + 2;
                    mb.bulk = Some(len);
                    len
                }
            };
            // `len` is at most `max_bulk`, so this cannot overflow in practice; saturate anyway.
            let end = mb.pos.saturating_add(len).saturating_add(2);
            if buf.len() < end {
                return self.pause(buf, Some(mb));
            }
            self.args.push(mb.pos..mb.pos + len);
            mb.pos = end;
            mb.bulk = None;
            mb.scan = Scan {
                upto: end,
                blocked: false,
            };
            mb.left -= 1;
        }
        Ok(Some(mb.pos))
    }

    /// Decodes an inline request: one line ending in LF (an optional CR before it is dropped).
    fn inline(&mut self, buf: &[u8], mut scan: Scan) -> Result<Option<Request<'_>>, ProtocolError> {
        let Some(lf) = find(buf, 0, &mut scan, b'\n') else {
            if buf.len() > self.limits.max_inline {
                let limit = self.limits.max_inline;
                return self.fail(ProtocolError::TooBigInline { limit });
            }
            self.state = State::Start(scan);
            self.seen = buf.len();
            return Ok(None);
        };
        let line_end = if lf > 0 && buf[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        match split_args(&buf[..line_end]) {
            Some(args) => {
                self.done();
                Ok(Some(Request::Inline { len: lf + 1, args }))
            }
            None => self.fail(ProtocolError::UnbalancedQuotes),
        }
    }

    /// Saves progress of an incomplete request.
    fn pause<T>(&mut self, buf: &[u8], mb: Option<Multibulk>) -> Result<Option<T>, ProtocolError> {
        if let Some(mb) = mb {
            self.state = State::Multibulk(mb);
        }
        self.seen = buf.len();
        Ok(None)
    }

    fn done(&mut self) {
        self.state = State::Start(Scan::default());
        self.seen = 0;
    }

    fn fail<T>(&mut self, e: ProtocolError) -> Result<T, ProtocolError> {
        self.reset();
        Err(e)
    }
}

/// Bytes searched byte by byte before handing a line search to `memchr`.
const SHORT_LINE: usize = 16;

/// Finds the first `term` at or after `from` (resuming at `scan.upto`), unless a NUL comes
/// first, in which case the line is blocked for good, as it is in Redis.
fn find(buf: &[u8], from: usize, scan: &mut Scan, term: u8) -> Option<usize> {
    if scan.blocked {
        return None;
    }
    let start = scan.upto.max(from);
    let rest = buf.get(start..)?;
    // Header lines are short: a plain loop over the first bytes beats memchr's setup cost.
    let head = &rest[..rest.len().min(SHORT_LINE)];
    let hit = match head.iter().position(|&b| b == term || b == 0) {
        Some(i) => Some(i),
        None => rest
            .get(SHORT_LINE..)
            .and_then(|tail| memchr2(term, 0, tail))
            .map(|i| i + SHORT_LINE),
    };
    match hit {
        Some(i) if rest[i] == term => {
            // Resume at the terminator itself: the byte after it may still be missing.
            scan.upto = start + i;
            Some(start + i)
        }
        Some(i) => {
            scan.upto = start + i;
            scan.blocked = true;
            None
        }
        None => {
            scan.upto = buf.len();
            None
        }
    }
}
