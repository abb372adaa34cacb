//! A minimal blocking RESP2 client for tests: one TCP connection, a read timeout,
//! commands, pipelines and raw bytes.

use std::io::{self, BufReader, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::reply::{encode_command, read_reply, Reply};

/// Read timeout used unless the caller sets another one.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A blocking RESP2 client over one TCP connection.
///
/// Methods named `try_*`, [`Client::send_raw`] and [`Client::read_reply`] return I/O errors
/// (a read timeout is `WouldBlock` or `TimedOut`) so fault tests can assert on them; the
/// plain helpers panic with the command in the message.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<TcpStream>,
    addr: String,
}

impl Client {
    /// Connects to `addr` (for example `"127.0.0.1:6379"`) with a 5 s read timeout.
    ///
    /// # Panics
    /// If the connection cannot be made.
    pub fn connect(addr: &str) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects to `addr` with a 5 s read timeout.
    ///
    /// # Errors
    /// Address resolution or connection errors.
    pub fn try_connect(addr: &str) -> io::Result<Client> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing");
        for sock in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(DEFAULT_READ_TIMEOUT))?;
                    stream.set_write_timeout(Some(DEFAULT_READ_TIMEOUT))?;
                    return Ok(Client {
                        reader: BufReader::new(stream),
                        addr: addr.to_string(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Changes the read timeout; `None` blocks forever (avoid that in tests).
    ///
    /// # Panics
    /// If the timeout is zero.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        let r = self.reader.get_ref().set_read_timeout(timeout);
        r.unwrap_or_else(|e| panic!("set_read_timeout({timeout:?}): {e}"));
    }

    /// The underlying stream, for socket-level tricks (shutdown, local address).
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Sends one command and reads its reply.
    ///
    /// # Panics
    /// On any I/O or protocol error, naming the command and the address.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let r = self.try_cmd(args);
        r.unwrap_or_else(|e| panic!("{} to {}: {e}", describe(args), self.addr))
    }

    /// Sends one command and reads its reply.
    ///
    /// # Errors
    /// I/O errors, read timeouts and malformed replies.
    pub fn try_cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.send_raw(&encode_command(args))?;
        self.read_reply()
    }

    /// Sends every command in one write, then reads one reply per command.
    ///
    /// # Panics
    /// On any I/O or protocol error.
    pub fn pipeline<C, A>(&mut self, cmds: &[C]) -> Vec<Reply>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        let r = self.try_pipeline(cmds);
        r.unwrap_or_else(|e| panic!("pipeline of {} to {}: {e}", cmds.len(), self.addr))
    }

    /// Sends every command in one write, then reads one reply per command.
    ///
    /// # Errors
    /// I/O errors, read timeouts and malformed replies.
    pub fn try_pipeline<C, A>(&mut self, cmds: &[C]) -> io::Result<Vec<Reply>>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        let mut out = Vec::new();
        for c in cmds {
            out.extend_from_slice(&encode_command(c.as_ref()));
        }
        self.send_raw(&out)?;
        cmds.iter().map(|_| self.read_reply()).collect()
    }

    /// Writes bytes exactly as given (inline commands, malformed input, partial frames).
    ///
    /// # Errors
    /// Write errors, for example a reset connection.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut stream = self.reader.get_ref();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Reads the next reply.
    ///
    /// # Errors
    /// `UnexpectedEof` when the peer closed, `WouldBlock`/`TimedOut` on a read timeout,
    /// `InvalidData` for malformed input, or other I/O errors (such as a reset).
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader)
    }

    /// Asserts that the peer closes the connection within `within`: end of stream or a
    /// reset, with no reply before it (a timeout is not a close).
    ///
    /// # Panics
    /// A reply arrives, the read times out, or it fails another way.
    pub fn assert_closed(&mut self, within: Duration) {
        self.set_read_timeout(Some(within));
        match self.read_reply() {
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                ),
                "the connection was not closed within {within:?}: {e}"
            ),
            Ok(r) => panic!("a reply instead of a closed connection: {r:?}"),
        }
    }

    /// Half-closes the connection (no more writes); replies can still be read.
    ///
    /// # Errors
    /// The error of `shutdown(2)`.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.reader.get_ref().shutdown(Shutdown::Write)
    }
}

/// True when `e` is what a socket read timeout produces.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn describe<A: AsRef<[u8]>>(args: &[A]) -> String {
    let words: Vec<String> = args
        .iter()
        .take(4)
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .collect();
    format!("command {:?}", words.join(" "))
}
