//! Sockets and buffers of the data path.
//!
//! [`Stream`] wraps a non-blocking TCP or Unix socket in tokio's `AsyncFd`, so the proxy decides
//! when readiness is cleared: a read that returns less than the buffer could take means the
//! socket is drained, and the next wait goes straight to the poller instead of costing one more
//! `read` that would only say "would block". [`ReadBuf`] is a zero-initialised, reusable read
//! buffer (no unsafe code needed to read into it).
//!
//! A TLS connection is one more variant ([`Stream::Tls`], boxed once per connection): the
//! same readiness calls, with rustls' records read from and written to the socket
//! underneath by its synchronous API. The plaintext variants are unchanged by it: one more
//! arm in each `match`, nothing boxed per read, no extra copy (rustls' state sits behind a
//! per-connection mutex that only its own task ever takes). rustls holds decrypted bytes
//! a read did not take (with the records of the same socket read it could not take yet, at
//! most 32 KiB) and encrypted bytes the socket did not take (at most its buffer limit,
//! 64 KiB); [`Stream::readable`] reports the first at once and [`flush`] reports the
//! second as a full socket, so callers wait for [`Stream::writable`] as they do for TCP.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};

/// A connected, non-blocking socket of either family.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(AsyncFd<std::net::TcpStream>),
    /// Unix domain socket.
    Unix(AsyncFd<UnixStream>),
    /// TLS over a TCP or Unix socket.
    Tls(Box<Tls>),
}

/// A TLS connection over a plaintext [`Stream`], after its handshake.
#[derive(Debug)]
pub struct Tls {
    sock: Stream,
    /// Behind a mutex only so the stream is `Sync` (the control plane's tasks hold it across
    /// awaits on a multi-task runtime); one task owns a connection, so it is never contended.
    conn: Mutex<Conn>,
}

/// rustls' state of one connection, with what its last calls said about the input, so
/// [`Stream::readable`] answers without asking rustls again at every poll.
#[derive(Debug)]
struct Conn {
    tls: rustls::Connection,
    /// Decrypted bytes, the end or an error wait to be read: the next read returns without
    /// the socket. Set from what rustls reported when it last processed records, cleared
    /// once a read took less than it asked for (rustls processes every complete record it
    /// holds, so nothing else waits) or found the socket drained.
    waiting: bool,
    /// The peer's close_notify arrived: once the decrypted bytes are read, the end waits.
    closed: bool,
    /// Bytes of records read from the socket that rustls did not take yet (it holds at most
    /// 16 KiB of decrypted bytes and a record): handed to it before the socket is read
    /// again. Empty, with no allocation, unless one read brought more than that; at most
    /// [`TLS_READ`] bytes, since the socket is read only once it is empty.
    inbox: Vec<u8>,
}

impl Conn {
    /// Decrypt the records read so far and note what waits.
    fn process(&mut self) -> Result<(), rustls::Error> {
        match self.tls.process_new_packets() {
            Ok(state) => {
                self.closed = state.peer_has_closed();
                self.waiting = state.plaintext_bytes_to_read() > 0 || self.closed;
                Ok(())
            }
            Err(e) => {
                self.waiting = true;
                Err(e)
            }
        }
    }

    /// Hand rustls as much of `records` as it takes, decrypting as it goes; returns the
    /// bytes it took. An error is the peer's (a bad record): the alert goes out on `sock`.
    fn feed(&mut self, mut records: &[u8], sock: &Stream) -> io::Result<usize> {
        let total = records.len();
        while !records.is_empty() {
            match self.tls.read_tls(&mut records) {
                // After close_notify rustls reads nothing more: the rest is ignored.
                Ok(0) => return Ok(total),
                Ok(_) => {}
                // Its decrypted bytes are full: the rest waits until they are read.
                Err(e) if e.kind() == io::ErrorKind::Other => break,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.process() {
                let _ = self.tls.write_tls(&mut Raw(sock));
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        Ok(total - records.len())
    }

    /// Hand rustls what waits in the inbox, as far as it takes it.
    fn feed_inbox(&mut self, sock: &Stream) -> io::Result<()> {
        let inbox = std::mem::take(&mut self.inbox);
        let took = self.feed(&inbox, sock)?;
        if took < inbox.len() {
            self.inbox = inbox;
            self.inbox.drain(..took);
        }
        Ok(())
    }

    /// Read the socket once (up to [`TLS_READ`] bytes) and hand rustls what came; `Ok(0)`
    /// is the end. A short read or `WouldBlock` clears the readiness.
    fn read_socket(&mut self, sock: &Stream, ready: &mut Ready<'_>) -> io::Result<usize> {
        RECORDS.with_borrow_mut(|records| {
            if records.len() < TLS_READ {
                records.resize(TLS_READ, 0);
            }
            let n = loop {
                match sock.raw_read(records) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        if e.kind() == io::ErrorKind::WouldBlock {
                            ready.clear();
                        }
                        return Err(e);
                    }
                }
            };
            if n == 0 {
                // rustls learns of the end too: a close without close_notify reads as such.
                let _ = self.tls.read_tls(&mut &[][..]);
                return Ok(0);
            }
            if n < records.len() {
                ready.clear();
            }
            let took = self.feed(&records[..n], sock)?;
            if took < n {
                self.inbox.extend_from_slice(&records[took..n]);
            }
            Ok(n)
        })
    }
}

/// The plaintext socket under a TLS connection, as rustls reads and writes it.
struct Raw<'a>(&'a Stream);

impl Read for Raw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.raw_read(buf)
    }
}

/// Bytes of records a TLS read takes from the socket in one system call. rustls reads at
/// most 4 KiB at a time, so a large request or reply cost a `read` per 4 KiB; this is as
/// much as rustls takes at once (16 KiB of decrypted bytes and the record that crosses it).
const TLS_READ: usize = 32 * 1024;

thread_local! {
    /// Where a TLS read puts the socket's bytes before rustls takes them: one buffer per
    /// thread (allocated on its first TLS read), none per connection.
    static RECORDS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Write for Raw<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    /// rustls hands over every record it holds at once (a write of more than 16 KiB is
    /// several records): one `sendmsg` sends them all, where the default would send only the
    /// first and cost a system call per record. A single record (the usual case) goes by
    /// `send`; neither takes the file-position lock `writev` takes on every call.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let sock = match self.0 {
            Stream::Tcp(s) => socket2::SockRef::from(s.get_ref()),
            Stream::Unix(s) => socket2::SockRef::from(s.get_ref()),
            Stream::Tls(_) => return Err(nested()),
        };
        match bufs {
            [one] => sock.send(one),
            _ => sock.send_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Proof that the socket was reported ready; lets the owner clear a stale readiness.
pub enum Ready<'a> {
    /// TCP.
    Tcp(AsyncFdReadyGuard<'a, std::net::TcpStream>),
    /// Unix.
    Unix(AsyncFdReadyGuard<'a, UnixStream>),
    /// TLS bytes already decrypted wait to be read: no socket readiness involved.
    Buffered,
}

impl Ready<'_> {
    /// The socket has nothing more (read) or no more room (write) until the poller says so.
    pub fn clear(&mut self) {
        match self {
            Ready::Tcp(g) => g.clear_ready(),
            Ready::Unix(g) => g.clear_ready(),
            Ready::Buffered => {}
        }
    }
}

impl Stream {
    /// Adopt a TCP socket (made non-blocking) into the current runtime.
    ///
    /// # Errors
    /// The socket cannot be made non-blocking or registered with the poller.
    // `AsyncFd::new` is deprecated because an arbitrary `AsRawFd` type may close or swap its
    // descriptor behind the registration. A std socket owns its descriptor for its whole life
    // and the `AsyncFd` owns the socket, so that cannot happen here.
    #[allow(deprecated)]
    pub fn tcp(s: std::net::TcpStream) -> io::Result<Self> {
        s.set_nonblocking(true)?;
        Ok(Stream::Tcp(AsyncFd::new(s)?))
    }

    /// Adopt a Unix socket (made non-blocking) into the current runtime.
    ///
    /// # Errors
    /// The socket cannot be made non-blocking or registered with the poller.
    #[allow(deprecated)] // sound for an owned std socket; see `Stream::tcp`
    pub fn unix(s: UnixStream) -> io::Result<Self> {
        s.set_nonblocking(true)?;
        Ok(Stream::Unix(AsyncFd::new(s)?))
    }

    /// Wait until the socket may be read (for TLS: at once when decrypted bytes wait).
    pub async fn readable(&self) -> io::Result<Ready<'_>> {
        match self {
            Stream::Tcp(s) => s.readable().await.map(Ready::Tcp),
            Stream::Unix(s) => s.readable().await.map(Ready::Unix),
            Stream::Tls(t) => {
                if t.buffered() {
                    return Ok(Ready::Buffered);
                }
                match &t.sock {
                    Stream::Tcp(s) => s.readable().await.map(Ready::Tcp),
                    Stream::Unix(s) => s.readable().await.map(Ready::Unix),
                    Stream::Tls(_) => Err(nested()),
                }
            }
        }
    }

    /// Wait until the socket may be written.
    pub async fn writable(&self) -> io::Result<Ready<'_>> {
        match self {
            Stream::Tcp(s) => s.writable().await.map(Ready::Tcp),
            Stream::Unix(s) => s.writable().await.map(Ready::Unix),
            Stream::Tls(t) => match &t.sock {
                Stream::Tcp(s) => s.writable().await.map(Ready::Tcp),
                Stream::Unix(s) => s.writable().await.map(Ready::Unix),
                Stream::Tls(_) => Err(nested()),
            },
        }
    }

    /// Read from the socket itself (for TLS: the plaintext socket under it).
    fn raw_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.get_ref().read(buf),
            Stream::Unix(s) => s.get_ref().read(buf),
            Stream::Tls(t) => t.sock.raw_read(buf),
        }
    }

    /// Write what the socket takes now. For TLS, the bytes taken are encrypted and as much as
    /// the socket takes is sent; the rest waits in rustls and [`flush`] reports it.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.get_ref().write(buf),
            Stream::Unix(s) => s.get_ref().write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    /// Send what TLS still holds; true when some of it waits for the socket. Always false for
    /// plaintext sockets.
    pub fn drain(&self) -> io::Result<bool> {
        match self {
            Stream::Tls(t) => t.drain(),
            _ => Ok(false),
        }
    }

    /// End the sending side once what was written has left (TLS: its close_notify first, as
    /// far as the socket takes it now): the peer reads every byte, then the end. Reading
    /// stays open, so a peer still sending is not answered with a reset (which would make it
    /// drop replies it has not read yet).
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.get_ref().shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.get_ref().shutdown(std::net::Shutdown::Write),
            Stream::Tls(t) => {
                let mut conn = t.lock();
                conn.tls.send_close_notify();
                let _ = send(&mut conn.tls, &t.sock);
                drop(conn);
                t.sock.shutdown_write()
            }
        }
    }

    /// The TCP socket underneath, if it is one (for TLS: the one under it).
    pub fn tcp_socket(&self) -> Option<&std::net::TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s.get_ref()),
            Stream::Unix(_) => None,
            Stream::Tls(t) => t.sock.tcp_socket(),
        }
    }

    /// Whether bytes (or the end) are there to read, asked of the socket itself without
    /// waiting; for TLS, decrypted bytes waiting count too, and records on the socket are
    /// read into rustls (nothing is lost).
    pub fn has_input(&self) -> bool {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        let peeked = match self {
            Stream::Tcp(s) => socket2::SockRef::from(s.get_ref()).peek(&mut byte),
            Stream::Unix(s) => socket2::SockRef::from(s.get_ref()).peek(&mut byte),
            Stream::Tls(t) => return t.has_input(),
        };
        !matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Run a TLS handshake over `sock` with `conn` (client or server side) and return the
    /// TLS stream; the caller bounds it in time.
    ///
    /// # Errors
    /// The socket failed or closed, or rustls refused the peer (its error is inside the
    /// `io::Error`, kind `InvalidData`).
    pub async fn tls(sock: Stream, mut conn: rustls::Connection) -> io::Result<Stream> {
        loop {
            while conn.wants_write() {
                let mut ready = sock.writable().await?;
                match conn.write_tls(&mut Raw(&sock)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear(),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if !conn.is_handshaking() {
                break;
            }
            let mut ready = sock.readable().await?;
            match conn.read_tls(&mut Raw(&sock)) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.clear();
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = conn.process_new_packets() {
                // Tell the peer why (the alert rustls queued), as far as the socket takes it.
                let _ = conn.write_tls(&mut Raw(&sock));
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        // A client's first request often arrives with its handshake's last flight.
        let mut conn = Conn {
            tls: conn,
            waiting: true,
            closed: false,
            inbox: Vec::new(),
        };
        // Already processed: this only notes what waits (an error stays for the first read).
        let _ = conn.process();
        Ok(Stream::Tls(Box::new(Tls {
            sock,
            conn: Mutex::new(conn),
        })))
    }

    /// Read after a readiness report. `Ok(0)` is end of stream; `WouldBlock` means nothing was
    /// there. A short read or `WouldBlock` clears the readiness.
    pub fn read(&self, ready: &mut Ready<'_>, buf: &mut [u8]) -> io::Result<usize> {
        if let Stream::Tls(t) = self {
            return t.read(ready, buf);
        }
        loop {
            match self.raw_read(buf) {
                Ok(n) => {
                    if n > 0 && n < buf.len() {
                        ready.clear();
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        ready.clear();
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// TLS is only ever made over a plaintext socket.
fn nested() -> io::Error {
    io::Error::other("TLS over TLS is not supported")
}

impl Tls {
    /// The connection state (a panic while it was held cannot leave it torn: rustls' calls
    /// do not panic, and a poisoned lock is taken as is).
    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first certificate the peer presented, if any.
    pub fn peer_certificate(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        let conn = self.lock();
        conn.tls
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
    }

    /// Decrypted bytes wait to be read (or an error or the end waits to be reported).
    fn buffered(&self) -> bool {
        self.lock().waiting
    }

    fn read(&self, ready: &mut Ready<'_>, buf: &mut [u8]) -> io::Result<usize> {
        let mut conn = self.lock();
        loop {
            match conn.tls.reader().read(buf) {
                Ok(n) => {
                    // A read that took less than it asked for emptied rustls' decrypted bytes.
                    conn.waiting = n == buf.len() || conn.closed || !conn.inbox.is_empty();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the socket without close_notify: the end, as for TCP.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let got = if conn.inbox.is_empty() {
                conn.read_socket(&self.sock, ready)
            } else {
                conn.feed_inbox(&self.sock).map(|()| 1)
            };
            match got {
                Ok(0) => {
                    conn.waiting = true;
                    return Ok(0);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.waiting = false;
                    return Err(e);
                }
                Err(e) => {
                    conn.waiting = true;
                    return Err(e);
                }
            }
            // A record may call for an answer (a key update): sent as far as the socket takes
            // it now, the rest with the next write.
            send(&mut conn.tls, &self.sock)?;
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut conn = self.lock();
        let tls = &mut conn.tls;
        // Earlier records first, so what rustls holds stays within its buffer limit.
        if send(tls, &self.sock)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = tls.writer().write(buf)?;
        send(tls, &self.sock)?;
        Ok(n)
    }

    fn drain(&self) -> io::Result<bool> {
        send(&mut self.lock().tls, &self.sock)
    }

    fn has_input(&self) -> bool {
        let mut conn = self.lock();
        if !conn.inbox.is_empty() && conn.feed_inbox(&self.sock).is_err() {
            return true;
        }
        if conn.waiting {
            return true;
        }
        match conn.tls.read_tls(&mut Raw(&self.sock)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            // Records other than data (a server's session tickets after the handshake) are
            // no input: only decrypted bytes, the end or an error are.
            Ok(n) if n > 0 => conn.process().map_or(true, |()| conn.waiting),
            Ok(_) | Err(_) => {
                conn.waiting = true;
                true
            }
        }
    }
}

/// Write the records rustls holds as far as the socket takes them; true when some wait.
fn send(conn: &mut rustls::Connection, sock: &Stream) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(&mut Raw(sock)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Write as much of `buf` as the socket takes now and drop what was written; returns true when
/// the socket is full (the rest must wait for [`Stream::writable`]). For TLS, records rustls
/// still holds count as the rest.
pub fn flush(stream: &Stream, buf: &mut bytes::BytesMut) -> io::Result<bool> {
    use bytes::Buf;
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    stream.drain()
}

/// Free an empty output buffer whose allocation is larger than `keep` bytes (an empty one
/// with a small allocation is kept for reuse), so a burst does not pin its memory for the
/// life of the connection.
pub fn release_if_idle(buf: &mut bytes::BytesMut, keep: usize) {
    // `capacity` counts only the room after the written-out prefix, which an emptied buffer
    // still holds; `try_reclaim` moves an empty buffer back to the start of its allocation
    // (no copy, no allocation) and says whether that allocation exceeds `keep`.
    if buf.is_empty() && buf.try_reclaim(keep + 1) {
        *buf = bytes::BytesMut::new();
    }
}

/// A reusable read buffer: bytes `start..end` are unconsumed data. It is zero-filled when it
/// grows, so reads go into initialised memory.
#[derive(Default, Debug)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// Unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    /// Number of unconsumed bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    /// No unconsumed bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
    /// Drop `n` consumed bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
    /// Room for at least `min` more bytes, at the end of the data.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.buf.len() - self.end < min && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < min {
            let want = (self.end + min).max(self.buf.len() * 2);
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.end..]
    }
    /// `n` bytes were written into [`ReadBuf::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }
    /// Append bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.filled(bytes.len());
    }
    /// Bytes allocated (0 when the buffer holds no memory).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
    /// Give back the memory above `keep` bytes once the unconsumed data is small: all of it
    /// when empty; when at most `keep / 2` bytes are left, they move to a buffer of `keep`
    /// bytes. One large request or reply then does not pin its buffer for the life of the
    /// connection, even while a pipeline keeps a partial one in it.
    pub fn shrink_if_idle(&mut self, keep: usize) {
        if self.buf.len() <= keep {
            return;
        }
        if self.is_empty() {
            self.buf = Vec::new();
        } else if self.len() <= keep / 2 {
            let mut small = vec![0; keep];
            small[..self.len()].copy_from_slice(self.data());
            self.end = self.len();
            self.start = 0;
            self.buf = small;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReadBuf;

    /// Both ends of a TLS connection over a socket pair (a self-signed certificate for
    /// `localhost`), after their handshakes.
    async fn tls_pair() -> (super::Stream, super::Stream) {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der = cert.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let c = rustls::ClientConnection::new(std::sync::Arc::new(client), name).unwrap();
        let s = rustls::ServerConnection::new(std::sync::Arc::new(server)).unwrap();
        let (c, s) = tokio::join!(
            super::Stream::tls(
                super::Stream::unix(a).unwrap(),
                rustls::Connection::Client(c)
            ),
            super::Stream::tls(
                super::Stream::unix(b).unwrap(),
                rustls::Connection::Server(s)
            ),
        );
        (c.unwrap(), s.unwrap())
    }

    /// 4 MiB written in large pieces (records of 16 KiB, several per write) and read in
    /// pieces of 1000 bytes: a socket read brings more records than rustls takes at once, so
    /// the rest waits in the connection's inbox; every byte arrives once and in order.
    #[test]
    fn tls_carries_a_large_stream_through_small_reads() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, server) = tls_pair().await;
            let sent: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
            let writer = async {
                for piece in sent.chunks(100_000) {
                    let mut out = bytes::BytesMut::from(piece);
                    while super::flush(&client, &mut out).unwrap() {
                        client.writable().await.unwrap().clear();
                    }
                }
            };
            let reader = async {
                let mut got = Vec::new();
                let mut buf = [0u8; 1000];
                while got.len() < sent.len() {
                    let mut ready = server.readable().await.unwrap();
                    match server.read(&mut ready, &mut buf) {
                        Ok(0) => panic!("end of stream after {} bytes", got.len()),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                got
            };
            let ((), got) = tokio::join!(writer, reader);
            assert!(got == sent, "the bytes read differ from the bytes written");
        });
    }

    #[test]
    fn read_buf_keeps_unconsumed_bytes_across_compaction_and_growth() {
        let mut b = ReadBuf::default();
        b.extend(b"hello world");
        b.consume(6);
        assert_eq!(b.data(), b"world");
        let room = b.spare(100);
        assert!(room.len() >= 100);
        room[..3].copy_from_slice(b"!!!");
        b.filled(3);
        assert_eq!(b.data(), b"world!!!");
        b.consume(8);
        assert!(b.is_empty());
        b.shrink_if_idle(0);
        assert_eq!(b.capacity(), 0, "an empty buffer gives its memory back");
        assert_eq!(
            b.spare(1).len(),
            1,
            "a released buffer grows again on demand"
        );
    }

    #[test]
    fn a_large_read_buf_shrinks_once_little_is_left() {
        let mut b = ReadBuf::default();
        b.extend(&vec![7; 1 << 20]);
        b.consume((1 << 20) - 3);
        b.shrink_if_idle(1024);
        assert_eq!(b.capacity(), 1024);
        assert_eq!(b.data(), [7, 7, 7]);
    }

    #[test]
    fn an_emptied_output_buffer_is_released_only_when_large() {
        use bytes::{Buf, BytesMut};
        let mut big = BytesMut::new();
        big.extend_from_slice(&vec![1; 1 << 20]);
        big.advance(1 << 20);
        super::release_if_idle(&mut big, 4096);
        assert_eq!(big.capacity(), 0, "the written-out megabyte is freed");
        let mut small = BytesMut::with_capacity(1024);
        small.extend_from_slice(b"abc");
        small.advance(3);
        super::release_if_idle(&mut small, 4096);
        assert!(small.capacity() >= 1021, "a small buffer stays for reuse");
    }
}
