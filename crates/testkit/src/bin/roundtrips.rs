//! Round trips of a session-level case, for bench/run.sh (redis-benchmark sends one command
//! at a time and cannot run a transaction or pop what it pushed).
//!
//! ```text
//! roundtrips PORT CASE CLIENTS REQUESTS
//! ```
//!
//! `CLIENTS` connections on 127.0.0.1:`PORT` run `REQUESTS` cases between them, one at a
//! time per connection (pipeline 1). Like redis-benchmark, every connection is served by
//! one thread's event loop (a current-thread tokio runtime), so the client spends as little
//! of the machine's CPU as the GET/SET cases' client does. Cases:
//! - `multi`: `MULTI`, `INCR rt:{c}`, `EXEC` sent in one write; one round trip, three
//!   replies.
//! - `blpop`: `RPUSH rt:q{c} x`, then `BLPOP rt:q{c} 0` after its reply; two round trips,
//!   the pop never waits for data.
//!
//! Prints one CSV line `rps,p99_ms` (cases per second; 99th percentile of a case's time, ms).
//! Any error reply, unexpected reply or I/O error stops the run with exit status 1.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One step of a case: the bytes sent, how many replies come back for them, and whether
/// the last of those must be a non-null array (EXEC's results, BLPOP's key and element).
struct Step {
    request: Vec<u8>,
    replies: usize,
    array_last: bool,
}

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn steps(case: &str, n: usize) -> Result<Vec<Step>, String> {
    match case {
        "multi" => {
            let key = format!("rt:{{{n}}}");
            let mut request = command(&["MULTI"]);
            request.extend(command(&["INCR", &key]));
            request.extend(command(&["EXEC"]));
            Ok(vec![Step {
                request,
                replies: 3,
                array_last: true,
            }])
        }
        "blpop" => {
            let key = format!("rt:q{n}");
            Ok(vec![
                Step {
                    request: command(&["RPUSH", &key, "x"]),
                    replies: 1,
                    array_last: false,
                },
                Step {
                    request: command(&["BLPOP", &key, "0"]),
                    replies: 1,
                    array_last: true,
                },
            ])
        }
        _ => Err(format!("unknown case {case}: multi or blpop")),
    }
}

/// Checks one whole reply: not an error, and a non-null array where `array` asks for one.
fn check(reply: &[u8], array: bool) -> Result<(), String> {
    let wrong = reply.starts_with(b"-")
        || (array && (!reply.starts_with(b"*") || reply.starts_with(b"*-1")));
    if wrong {
        return Err(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(reply)
        ));
    }
    Ok(())
}

async fn client(
    addr: String,
    case: String,
    n: usize,
    count: usize,
) -> Result<Vec<Duration>, String> {
    let steps = steps(&case, n)?;
    let mut s = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        for step in &steps {
            s.write_all(&step.request)
                .await
                .map_err(|e| e.to_string())?;
            let mut got = 0;
            while got < step.replies {
                match resp::reply::reply_len(&buf).map_err(|e| e.to_string())? {
                    Some(len) => {
                        got += 1;
                        check(&buf[..len], step.array_last && got == step.replies)?;
                        buf.drain(..len);
                    }
                    None => {
                        let read =
                            tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut buf))
                                .await
                                .map_err(|_| "no reply within 10 s".to_string())?
                                .map_err(|e| e.to_string())?;
                        if read == 0 {
                            return Err("the server closed the connection".into());
                        }
                    }
                }
            }
        }
        times.push(t.elapsed());
    }
    Ok(times)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, case, clients, requests] = args.as_slice() else {
        eprintln!("usage: roundtrips PORT multi|blpop CLIENTS REQUESTS");
        std::process::exit(2);
    };
    let (Ok(clients), Ok(requests)) = (clients.parse::<usize>(), requests.parse::<usize>()) else {
        eprintln!("CLIENTS and REQUESTS are numbers");
        std::process::exit(2);
    };
    let clients = clients.max(1);
    let addr = format!("127.0.0.1:{port}");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roundtrips: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let result: Result<Vec<Duration>, String> = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|n| {
                let count = requests / clients + usize::from(n < requests % clients);
                tokio::spawn(client(addr.clone(), case.clone(), n, count))
            })
            .collect();
        let mut times = Vec::with_capacity(requests);
        for t in tasks {
            let mut v = t
                .await
                .map_err(|e| format!("a client task failed: {e}"))??;
            times.append(&mut v);
        }
        Ok(times)
    });
    let took = started.elapsed().as_secs_f64();
    let mut times = match result {
        Ok(t) => t,
        Err(e) => {
            eprintln!("roundtrips: {e}");
            std::process::exit(1);
        }
    };
    times.sort_unstable();
    let p99 = times
        .get((times.len() * 99 / 100).min(times.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    println!(
        "{:.0},{:.3}",
        times.len() as f64 / took,
        p99.as_secs_f64() * 1000.0
    );
}
