//! Round trips of a session-level case, for bench/run.sh (redis-benchmark sends one command
//! at a time and cannot run a transaction or pop what it pushed).
//!
//! ```text
//! roundtrips PORT CASE CLIENTS REQUESTS
//! ```
//!
//! `CLIENTS` connections on 127.0.0.1:`PORT`, each on its own thread, run `REQUESTS` cases
//! between them, one at a time per connection (pipeline 1). Cases:
//! - `multi`: `MULTI`, `INCR rt:{c}`, `EXEC` sent together; one round trip, three replies.
//! - `blpop`: `RPUSH rt:q{c} x`, then `BLPOP rt:q{c} 0` after its reply; two round trips,
//!   the pop never waits for data.
//!
//! Prints one CSV line `rps,p99_ms` (cases per second; 99th percentile of a case's time, ms).
//! Any error reply or I/O error stops the run with exit status 1.

use std::time::{Duration, Instant};

use testkit::{Client, Reply};

fn one(c: &mut Client, case: &str, n: usize) -> Result<(), String> {
    match case {
        "multi" => {
            let key = format!("rt:{{{n}}}");
            let replies = c.pipeline(&[&["MULTI"][..], &["INCR", &key], &["EXEC"]]);
            match replies.get(2) {
                Some(Reply::Array(Some(_))) => Ok(()),
                other => Err(format!("EXEC answered {other:?}")),
            }
        }
        "blpop" => {
            let key = format!("rt:q{n}");
            match c.cmd(&["RPUSH", &key, "x"]) {
                Reply::Int(_) => {}
                other => return Err(format!("RPUSH answered {other:?}")),
            }
            match c.cmd(&["BLPOP", &key, "0"]) {
                Reply::Array(Some(_)) => Ok(()),
                other => Err(format!("BLPOP answered {other:?}")),
            }
        }
        _ => Err(format!("unknown case {case}: multi or blpop")),
    }
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
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|n| {
            let (addr, case) = (addr.clone(), case.clone());
            let count = requests / clients + usize::from(n < requests % clients);
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let mut c = Client::connect(&addr);
                c.set_read_timeout(Some(Duration::from_secs(10)));
                let mut times = Vec::with_capacity(count);
                for _ in 0..count {
                    let t = Instant::now();
                    one(&mut c, &case, n)?;
                    times.push(t.elapsed());
                }
                Ok(times)
            })
        })
        .collect();
    let mut times = Vec::with_capacity(requests);
    for t in threads {
        match t.join() {
            Ok(Ok(mut v)) => times.append(&mut v),
            Ok(Err(e)) => {
                eprintln!("roundtrips: {e}");
                std::process::exit(1);
            }
            Err(_) => {
                eprintln!("roundtrips: a client thread panicked");
                std::process::exit(1);
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
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
