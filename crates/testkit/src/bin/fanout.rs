//! Pub/Sub fan-out, for bench/run.sh: one publisher and many subscribers on one channel.
//!
//! ```text
//! fanout PORT SUBSCRIBERS MESSAGES
//! ```
//!
//! `SUBSCRIBERS` connections to 127.0.0.1:`PORT` (one thread each, blocking reads) SUBSCRIBE
//! to `bench:fanout`; once all are confirmed, one connection PUBLISHes `MESSAGES` messages of
//! 32 bytes (a sequence number) on it, pipelined but never more than [`WINDOW`] messages
//! ahead of the slowest subscriber, so no output buffer (Redis' or a proxy's) grows with the
//! run. Every subscriber must receive every message, in order.
//!
//! Prints one CSV line `deliveries_per_s,p99_ms`: `SUBSCRIBERS x MESSAGES` divided by the time
//! from the first PUBLISH to the last message read by the last subscriber, and the 99th
//! percentile of a message's time from its PUBLISH being written to a subscriber reading it.
//! A missing, wrong or out-of-order message, an error reply or an I/O error stops the run
//! with exit status 1; so does no progress for 10 s.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHANNEL: &str = "bench:fanout";
/// Messages the publisher may be ahead of the slowest subscriber.
const WINDOW: u32 = 512;
/// Longest wait without progress before the run fails.
const STALL: Duration = Duration::from_secs(10);

/// One subscriber's count of messages read, alone on its cache line.
#[repr(align(64))]
#[derive(Default)]
struct Count(AtomicU32);

/// What the publisher and subscribers share.
struct Shared {
    counts: Vec<Count>,
    /// When each message's PUBLISH was written, in ns since `start`.
    sent_ns: Vec<AtomicU64>,
    start: Instant,
    failed: AtomicBool,
}

/// The bytes of message `seq` as a subscriber reads them (RESP2 `message` push).
fn frame(seq: u32) -> Vec<u8> {
    let body = format!("{seq:032}");
    format!(
        "*3\r\n$7\r\nmessage\r\n${}\r\n{CHANNEL}\r\n${}\r\n{body}\r\n",
        CHANNEL.len(),
        body.len()
    )
    .into_bytes()
}

fn connect(addr: &str) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(STALL)).ok();
    Ok(s)
}

/// Subscribe, say so on `ready`, then read `messages` frames and check each; returns each
/// message's latency in µs.
fn subscriber(
    addr: &str,
    me: usize,
    messages: u32,
    shared: &Shared,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<Vec<u32>, String> {
    let mut s = connect(addr)?;
    let cmd = format!(
        "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{CHANNEL}\r\n",
        CHANNEL.len()
    );
    s.write_all(cmd.as_bytes()).map_err(|e| e.to_string())?;
    let confirm = format!(
        "*3\r\n$9\r\nsubscribe\r\n${}\r\n{CHANNEL}\r\n:1\r\n",
        CHANNEL.len()
    );
    let mut got = vec![0u8; confirm.len()];
    s.read_exact(&mut got)
        .map_err(|e| format!("subscriber {me}: {e}"))?;
    if got != confirm.as_bytes() {
        return Err(format!(
            "subscriber {me}: SUBSCRIBE answered {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    let _ = ready.send(Ok(()));
    let len = frame(0).len();
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0;
    let mut seq = 0u32;
    let mut lat = Vec::with_capacity(messages as usize);
    while seq < messages {
        if shared.failed.load(Ordering::Relaxed) {
            return Err(String::new());
        }
        let n = s
            .read(&mut buf[have..])
            .map_err(|e| format!("subscriber {me} after {seq} messages: {e}"))?;
        if n == 0 {
            return Err(format!(
                "subscriber {me}: connection closed after {seq} messages"
            ));
        }
        have += n;
        let now = shared.start.elapsed().as_nanos() as u64;
        let mut at = 0;
        while have - at >= len && seq < messages {
            if buf[at..at + len] != frame(seq)[..] {
                return Err(format!(
                    "subscriber {me}: message {seq} was {:?}",
                    String::from_utf8_lossy(&buf[at..at + len])
                ));
            }
            let sent = shared.sent_ns[seq as usize].load(Ordering::Acquire);
            lat.push((now.saturating_sub(sent) / 1000) as u32);
            at += len;
            seq += 1;
        }
        buf.copy_within(at..have, 0);
        have -= at;
        shared.counts[me].0.store(seq, Ordering::Release);
    }
    Ok(lat)
}

/// Publish every message, staying within [`WINDOW`] of the slowest subscriber; returns when
/// every subscriber has read every message.
fn publisher(addr: &str, messages: u32, shared: &Shared) -> Result<(), String> {
    let mut s = connect(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(1))).ok();
    let mut replies = 0u32;
    let mut rbuf = vec![0u8; 16 * 1024];
    let mut pending = Vec::new();
    let slowest = || {
        shared
            .counts
            .iter()
            .map(|c| c.0.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    };
    let mut next = 0u32;
    let mut low = 0u32;
    let mut progress = Instant::now();
    while low < messages || replies < messages {
        let mut out = Vec::new();
        while next < messages && next < low + WINDOW {
            let body = format!("{next:032}");
            out.extend_from_slice(
                format!(
                    "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{CHANNEL}\r\n${}\r\n{body}\r\n",
                    CHANNEL.len(),
                    body.len()
                )
                .as_bytes(),
            );
            shared.sent_ns[next as usize]
                .store(shared.start.elapsed().as_nanos() as u64, Ordering::Release);
            next += 1;
        }
        if !out.is_empty() {
            s.write_all(&out).map_err(|e| format!("publisher: {e}"))?;
        }
        // Replies: integers (receivers); anything else is an error.
        match s.read(&mut rbuf) {
            Ok(0) => return Err("publisher: connection closed".into()),
            Ok(n) => {
                pending.extend_from_slice(&rbuf[..n]);
                while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                    if pending.first() != Some(&b':') {
                        return Err(format!(
                            "publisher: PUBLISH answered {:?}",
                            String::from_utf8_lossy(&pending[..end])
                        ));
                    }
                    pending.drain(..end + 2);
                    replies += 1;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("publisher: {e}")),
        }
        let now_low = slowest();
        if now_low > low {
            low = now_low;
            progress = Instant::now();
        } else if progress.elapsed() > STALL {
            return Err(format!(
                "no progress for {STALL:?}: the slowest subscriber has {low} of {messages}"
            ));
        } else if next >= low + WINDOW || next == messages {
            std::thread::yield_now();
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, subs, messages] = args.as_slice() else {
        eprintln!("usage: fanout PORT SUBSCRIBERS MESSAGES");
        std::process::exit(2);
    };
    let (Ok(subs), Ok(messages)) = (subs.parse::<usize>(), messages.parse::<u32>()) else {
        eprintln!("SUBSCRIBERS and MESSAGES are numbers");
        std::process::exit(2);
    };
    let subs = subs.max(1);
    let addr = format!("127.0.0.1:{port}");
    let shared = Arc::new(Shared {
        counts: (0..subs).map(|_| Count::default()).collect(),
        sent_ns: (0..messages).map(|_| AtomicU64::new(0)).collect(),
        start: Instant::now(),
        failed: AtomicBool::new(false),
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..subs)
        .map(|me| {
            let (addr, shared, tx) = (addr.clone(), Arc::clone(&shared), tx.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let r = subscriber(&addr, me, messages, &shared, &tx);
                    if let Err(e) = &r {
                        shared.failed.store(true, Ordering::Relaxed);
                        let _ = tx.send(Err(e.clone()));
                    }
                    r
                })
        })
        .collect();
    drop(tx);
    let fail = |e: String| -> ! {
        eprintln!("fanout: {e}");
        std::process::exit(1);
    };
    for _ in 0..subs {
        match rx.recv_timeout(STALL) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => fail(e),
            Err(_) => fail("subscribers did not all subscribe within 10 s".into()),
        }
    }
    let t0 = Instant::now();
    if let Err(e) = publisher(&addr, messages, &shared) {
        shared.failed.store(true, Ordering::Relaxed);
        fail(e);
    }
    let took = t0.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(subs * messages as usize);
    for t in threads {
        match t.map(|h| h.join()) {
            Ok(Ok(Ok(mut v))) => lat.append(&mut v),
            Ok(Ok(Err(e))) => fail(e),
            Ok(Err(_)) => fail("a subscriber thread panicked".into()),
            Err(e) => fail(format!("cannot start a thread: {e}")),
        }
    }
    lat.sort_unstable();
    let p99 = lat
        .get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    println!(
        "{:.0},{:.3}",
        (subs as f64 * f64::from(messages)) / took,
        f64::from(p99) / 1000.0
    );
}
