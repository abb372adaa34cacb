//! A small control-plane Redis client for health checks and Sentinel: one connection, pipelined
//! calls with a deadline, replies parsed into owned values. Not used on the data path.
//!
//! Every connection is opened with [`Link::open`], which connects with the pool's
//! [`Handshake`] (TLS when the pool has `backend_tls`) and runs its AUTH and SELECT before
//! anything else is sent.

use std::io;
use std::time::Duration;

use rampart_config::ServerAddr;
use resp::{ReplyDecoder, Value};
use tokio::time::{timeout, Instant};

use crate::handshake::{Handshake, HandshakeError};
use crate::io::{flush, Stream};

/// An owned reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// Simple or bulk string.
    Str(Vec<u8>),
    /// Error reply text.
    Err(String),
    /// Integer.
    Int(i64),
    /// Null bulk or null array.
    Nil,
    /// Array.
    Arr(Vec<Val>),
}

impl Val {
    /// The text of a string reply.
    pub fn text(&self) -> Option<String> {
        match self {
            Val::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Val::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }
    /// The items of an array reply.
    pub fn items(&self) -> &[Val] {
        match self {
            Val::Arr(v) => v,
            _ => &[],
        }
    }
    /// A short description for messages: the text of a string (at most 64 bytes), or what
    /// kind of reply it is.
    pub fn describe(&self) -> String {
        match self {
            Val::Str(s) => format!("'{}'", crate::text::sanitize(s, 64)),
            Val::Err(e) => format!("the error '{}'", crate::text::sanitize(e.as_bytes(), 128)),
            Val::Int(n) => format!("the integer {n}"),
            Val::Nil => "nil".to_string(),
            Val::Arr(v) => format!("an array of {} items", v.len()),
        }
    }

    /// Whether this is `+OK`/`+PONG`-like success (not an error, not nil).
    pub fn is_ok(&self) -> bool {
        !matches!(self, Val::Err(_) | Val::Nil)
    }
}

/// Parse one complete reply (as returned by the reply decoder).
pub fn parse(reply: &[u8]) -> Val {
    match resp::peek(reply) {
        Ok(Value::Simple(s)) => Val::Str(s.to_vec()),
        Ok(Value::Error(e)) => Val::Err(String::from_utf8_lossy(e).into_owned()),
        Ok(Value::Integer(n)) => Val::Int(n),
        Ok(Value::Bulk(Some(b))) => Val::Str(b.to_vec()),
        Ok(Value::Bulk(None)) | Ok(Value::Array(None)) => Val::Nil,
        Ok(Value::Array(Some(items))) => Val::Arr(items.into_iter().map(parse).collect()),
        Ok(Value::Other) | Err(_) => Val::Err("unparsable reply".into()),
    }
}

/// One control connection.
pub struct Link {
    io: Stream,
    buf: Vec<u8>,
    dec: ReplyDecoder,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

/// Why [`Link::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The TCP or unix-socket connect failed or timed out.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The connection broke or timed out during the handshake.
    #[error("connection set-up: {0}")]
    Io(io::Error),
    /// The server refused the handshake (a wrong password, a database it does not have).
    #[error("{0}")]
    Refused(#[from] HandshakeError),
}

impl Link {
    /// Connect and run `handshake`, all within `limit`.
    ///
    /// # Errors
    /// Connect failure, timeout, or a refused AUTH/SELECT ([`OpenError`]).
    pub async fn open(
        addr: &ServerAddr,
        handshake: &Handshake,
        limit: Duration,
    ) -> Result<Link, OpenError> {
        let started = Instant::now();
        let mut c = Link::connect(addr, handshake, limit)
            .await
            .map_err(OpenError::Connect)?;
        if handshake.is_empty() {
            // Nothing was accepted yet: a server that wants a password says NOAUTH to the
            // first command, which the caller judges.
            return Ok(c);
        }
        let left = limit.saturating_sub(started.elapsed());
        let replies = timeout(left, async {
            let mut out = Vec::new();
            for cmd in handshake.commands() {
                out.extend_from_slice(cmd);
            }
            c.write(&out).await?;
            let mut replies = Vec::with_capacity(handshake.commands().len());
            for _ in handshake.commands() {
                replies.push(c.next().await?);
            }
            Ok::<_, io::Error>(replies)
        })
        .await
        .map_err(|_| OpenError::Io(timed_out()))?
        .map_err(OpenError::Io)?;
        for (step, reply) in replies.iter().enumerate() {
            let reply = match reply {
                Val::Str(s) => Ok(s.as_slice()),
                Val::Err(e) => Err(e.as_str()),
                _ => Ok(&b"a reply that is not a string"[..]),
            };
            if let Err(e) = handshake.check(step, reply) {
                if e.is_credentials() {
                    handshake.note_refused(addr, &e.to_string());
                }
                return Err(e.into());
            }
        }
        handshake.note_accepted(addr);
        Ok(c)
    }

    /// Connect (and open TLS when `handshake` has it) within `limit`; no commands sent.
    async fn connect(
        addr: &ServerAddr,
        handshake: &Handshake,
        limit: Duration,
    ) -> io::Result<Link> {
        let fut = crate::handshake::connect(addr, handshake, false);
        let io = timeout(limit, fut).await.map_err(|_| timed_out())??;
        Ok(Link {
            io,
            buf: Vec::new(),
            dec: ReplyDecoder::new(resp::Limits::default()),
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut out = bytes::BytesMut::from(bytes);
        while flush(&self.io, &mut out)? {
            self.io.writable().await?.clear();
        }
        Ok(())
    }

    /// Read the next complete reply (no deadline; wrap in a timeout).
    ///
    /// # Errors
    /// The connection broke or sent something that is not RESP.
    pub async fn next(&mut self) -> io::Result<Val> {
        loop {
            match self.dec.decode(&self.buf) {
                Ok(Some(n)) => {
                    let v = parse(&self.buf[..n]);
                    self.buf.drain(..n);
                    return Ok(v);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            let mut chunk = [0u8; 4096];
            let mut ready = self.io.readable().await?;
            let n = match self.io.read(&mut ready, &mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Send `bytes` (complete RESP requests, as a client sent them) in one write and read
    /// `replies` replies, all within `limit`.
    ///
    /// # Errors
    /// Timeout, a broken connection, or bad RESP; the connection should then be dropped.
    pub async fn call_raw(
        &mut self,
        bytes: &[u8],
        replies: usize,
        limit: Duration,
    ) -> io::Result<Vec<Val>> {
        let fut = async {
            self.write(bytes).await?;
            let mut out = Vec::with_capacity(replies.min(1024));
            for _ in 0..replies {
                out.push(self.next().await?);
            }
            Ok(out)
        };
        timeout(limit, fut).await.map_err(|_| timed_out())?
    }

    /// Send `cmds` in one write and read one reply per command, all within `limit`.
    ///
    /// # Errors
    /// Timeout, a broken connection, or bad RESP; the connection should then be dropped.
    pub async fn call(&mut self, cmds: &[&[&[u8]]], limit: Duration) -> io::Result<Vec<Val>> {
        let fut = async {
            let mut out = bytes::BytesMut::new();
            for c in cmds {
                resp::encode::command(&mut out, c);
            }
            self.write(&out).await?;
            let mut replies = Vec::with_capacity(cmds.len());
            for _ in cmds {
                replies.push(self.next().await?);
            }
            Ok(replies)
        };
        timeout(limit, fut).await.map_err(|_| timed_out())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_role_replies() {
        let v = parse(b"*3\r\n$6\r\nmaster\r\n:42\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n$2\r\n42\r\n");
        assert_eq!(v.items()[0].text().as_deref(), Some("master"));
        assert_eq!(v.items()[1], Val::Int(42));
        assert_eq!(
            v.items()[2].items()[0].items()[1].text().as_deref(),
            Some("6380")
        );
        assert_eq!(parse(b"-LOADING x\r\n"), Val::Err("LOADING x".into()));
        assert!(!parse(b"$-1\r\n").is_ok());
    }
}
