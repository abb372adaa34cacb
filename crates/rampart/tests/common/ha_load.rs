//! Load generators for the high-availability tests: readers that check every value, writers
//! that record every acknowledged write, and a MONITOR tap. Each records errors with their
//! time and every latency; every loop stops when asked.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use testkit::{poll_until, Client, RedisServer, Reply};

/// Latency and error figures of a load run.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests answered correctly.
    pub ok: u64,
    /// Error replies and I/O failures, with the time since the load started.
    pub errors: Vec<(Duration, String)>,
    /// Replies that answered another request (wrong value).
    pub mismatches: Vec<String>,
    /// Latency of every request (answered or failed), sorted.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }

    /// One line with the figures.
    pub fn summary(&self) -> String {
        format!(
            "ok={} errors={} mismatches={} p50={:?} p99={:?} p999={:?} max={:?}",
            self.ok,
            self.errors.len(),
            self.mismatches.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(0.999),
            self.latencies.last().copied().unwrap_or_default()
        )
    }
}

/// Threads that GET preloaded keys through the proxy until stopped, checking each value.
pub struct ReadLoad {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    threads: Vec<JoinHandle<LoadReport>>,
    started: Instant,
}

impl ReadLoad {
    /// Starts `threads` readers on `addr`, each with its own connection and `read_timeout`.
    pub fn start(
        addr: &str,
        threads: usize,
        keys: &Arc<Vec<(String, String)>>,
        read_timeout: Duration,
    ) -> ReadLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let threads = (0..threads)
            .map(|t| {
                let (stop, done, keys) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(keys));
                let addr = addr.to_string();
                thread::spawn(move || {
                    read_loop(&addr, t, &keys, read_timeout, &stop, &done, started)
                })
            })
            .collect();
        ReadLoad {
            stop,
            done,
            threads,
            started,
        }
    }

    /// Requests finished so far (all threads).
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// When the load started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops the threads and merges their figures.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = LoadReport::default();
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| panic!("a reader thread panicked"));
            all.ok += r.ok;
            all.errors.extend(r.errors);
            all.mismatches.extend(r.mismatches);
            all.latencies.extend(r.latencies);
        }
        all.latencies.sort();
        all.errors.sort_by_key(|(t, _)| *t);
        all
    }
}

fn read_loop(
    addr: &str,
    t: usize,
    keys: &[(String, String)],
    read_timeout: Duration,
    stop: &AtomicBool,
    done: &AtomicU64,
    started: Instant,
) -> LoadReport {
    let mut r = LoadReport::default();
    let mut conn: Option<Client> = None;
    let mut i = t * 7919;
    while !stop.load(Ordering::Relaxed) {
        i = i.wrapping_add(1);
        let (k, v) = &keys[i % keys.len()];
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Client::try_connect(addr) {
                Ok(mut c) => {
                    c.set_read_timeout(Some(read_timeout));
                    conn.insert(c)
                }
                Err(e) => {
                    r.errors.push((started.elapsed(), format!("connect: {e}")));
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let reply = c.try_cmd(&["GET", k.as_str()]);
        r.latencies.push(t0.elapsed());
        done.fetch_add(1, Ordering::Relaxed);
        match reply {
            Ok(Reply::Bulk(Some(b))) if b == v.as_bytes() => r.ok += 1,
            Ok(Reply::Error(e)) => r.errors.push((started.elapsed(), format!("GET {k}: -{e}"))),
            Ok(other) => r
                .mismatches
                .push(format!("GET {k}: expected {v:?}, got {other:?}")),
            Err(e) => {
                r.errors.push((started.elapsed(), format!("GET {k}: {e}")));
                conn = None;
            }
        }
    }
    r
}

/// One acknowledged write.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The key written.
    pub key: String,
    /// The value written.
    pub value: String,
    /// When the acknowledgement arrived, since the load started.
    pub at: Duration,
}

/// Figures of a write load.
#[derive(Debug, Default)]
pub struct WriteReport {
    /// Every acknowledged write.
    pub acks: Vec<Ack>,
    /// Error replies and I/O failures, with the time since the load started.
    pub errors: Vec<(Duration, String)>,
    /// Latency of every write, sorted.
    pub latencies: Vec<Duration>,
}

impl WriteReport {
    /// The longest time during which no write at all was acknowledged, and when it began.
    pub fn longest_pause(&self) -> (Duration, Duration) {
        let mut at: Vec<Duration> = self.acks.iter().map(|a| a.at).collect();
        at.sort();
        at.windows(2)
            .map(|w| (w[1] - w[0], w[0]))
            .max()
            .unwrap_or_default()
    }

    /// The `q` quantile of the write latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

/// Threads that each `SET k_<thread>_<n> n` for n = 0, 1, 2, ... through the proxy.
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    threads: Vec<JoinHandle<WriteReport>>,
    started: Instant,
    errors: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl WriteLoad {
    /// Starts `threads` writers on `addr`, each with its own connection and `read_timeout`.
    pub fn start(addr: &str, threads: usize, read_timeout: Duration) -> WriteLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let threads = (0..threads)
            .map(|t| {
                let (stop, acked, errors) =
                    (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&errors));
                let addr = addr.to_string();
                thread::spawn(move || {
                    write_loop(&addr, t, read_timeout, &stop, &acked, &errors, started)
                })
            })
            .collect();
        WriteLoad {
            stop,
            acked,
            threads,
            started,
            errors,
        }
    }

    /// Writes acknowledged so far (all threads).
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Errors so far (all threads).
    pub fn errors(&self) -> usize {
        self.errors.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// When the load started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops the threads and merges their figures.
    pub fn stop(self) -> WriteReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = WriteReport::default();
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| panic!("a writer thread panicked"));
            all.acks.extend(r.acks);
            all.latencies.extend(r.latencies);
        }
        all.errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        all.errors.sort_by_key(|(t, _)| *t);
        all.latencies.sort();
        all
    }
}

fn write_loop(
    addr: &str,
    t: usize,
    read_timeout: Duration,
    stop: &AtomicBool,
    acked: &AtomicU64,
    errors: &Mutex<Vec<(Duration, String)>>,
    started: Instant,
) -> WriteReport {
    let mut r = WriteReport::default();
    let mut conn: Option<Client> = None;
    let push_err = |msg: String| {
        if let Ok(mut e) = errors.lock() {
            e.push((started.elapsed(), msg));
        }
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Client::try_connect(addr) {
                Ok(mut c) => {
                    c.set_read_timeout(Some(read_timeout));
                    conn.insert(c)
                }
                Err(e) => {
                    push_err(format!("connect: {e}"));
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let key = format!("k_{t}_{n}");
        let value = n.to_string();
        n += 1;
        let t0 = Instant::now();
        let reply = c.try_cmd(&["SET", key.as_str(), value.as_str()]);
        r.latencies.push(t0.elapsed());
        match reply {
            Ok(rep) if rep == Reply::ok() => {
                r.acks.push(Ack {
                    key,
                    value,
                    at: started.elapsed(),
                });
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => push_err(format!("SET {key}: {other:?}")),
            Err(e) => {
                push_err(format!("SET {key}: {e}"));
                conn = None;
            }
        }
    }
    r
}

/// Waits until `load` has finished `more` further requests, for at most `timeout`; returns
/// whether it did.
pub fn progressed(done: impl Fn() -> u64, more: u64, timeout: Duration) -> bool {
    let start = done();
    poll_until(timeout, || (done() >= start + more).then_some(())).is_some()
}

/// Every command a redis-server executes, as `MONITOR` prints it, collected by a thread.
pub struct CommandTap {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<TapReport>,
}

/// What a [`CommandTap`] saw.
#[derive(Debug, Default)]
pub struct TapReport {
    /// Every MONITOR line.
    pub lines: Vec<String>,
    /// Why the tap ended early (the connection closed), if it did.
    pub ended: Option<String>,
}

impl TapReport {
    /// The lines of command `cmd` (any case) sent by a client other than `except` (an
    /// `ip:port` as MONITOR prints it, such as the primary a replica streams from).
    pub fn commands_not_from(&self, cmd: &str, except: &str) -> Vec<&String> {
        let quoted = format!("\"{}\"", cmd.to_ascii_lowercase());
        self.lines
            .iter()
            .filter(|l| {
                let source = l
                    .split_once('[')
                    .and_then(|(_, rest)| rest.split_once(']'))
                    .and_then(|(inside, _)| inside.split_whitespace().nth(1))
                    .unwrap_or("");
                let command = l.split_once("] ").map_or("", |(_, c)| c);
                command.to_ascii_lowercase().starts_with(&quoted) && source != except
            })
            .collect()
    }
}

impl CommandTap {
    /// Connects to `addr` and starts `MONITOR`.
    ///
    /// # Panics
    /// If MONITOR is not accepted.
    pub fn start(addr: &str) -> CommandTap {
        let mut c = Client::connect(addr);
        assert_eq!(c.cmd(&["MONITOR"]), Reply::ok(), "MONITOR on {addr}");
        c.set_read_timeout(Some(Duration::from_millis(200)));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut r = TapReport::default();
            while !flag.load(Ordering::Relaxed) {
                match c.read_reply() {
                    Ok(Reply::Simple(line)) => r.lines.push(line),
                    Ok(other) => r.lines.push(format!("{other:?}")),
                    Err(e) if testkit::is_timeout(&e) => {}
                    Err(e) => {
                        r.ended = Some(e.to_string());
                        break;
                    }
                }
            }
            r
        });
        CommandTap { stop, handle }
    }

    /// Stops the tap and returns what it saw.
    pub fn stop(self) -> TapReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .join()
            .unwrap_or_else(|_| panic!("the MONITOR thread panicked"))
    }
}

/// Checks every acknowledged write against `server` with pipelined GETs; returns the
/// writes whose value is not there.
pub fn missing_writes<'a>(server: &RedisServer, acks: &'a [Ack]) -> Vec<&'a Ack> {
    let mut c = Client::connect(&server.addr());
    let mut missing = Vec::new();
    for chunk in acks.chunks(1000) {
        let cmds: Vec<Vec<&str>> = chunk.iter().map(|a| vec!["GET", a.key.as_str()]).collect();
        for (a, r) in chunk.iter().zip(c.pipeline(&cmds)) {
            if r != Reply::bulk(&a.value) {
                missing.push(a);
            }
        }
    }
    missing
}

/// How many errors each writer of a [`WriteLoad`] of `writers` threads got (errors name the
/// key `k_<thread>_<n>`).
pub fn errors_per_writer(report: &WriteReport, writers: usize) -> Vec<usize> {
    let mut per = vec![0; writers];
    for (_, e) in &report.errors {
        let t = e
            .strip_prefix("SET k_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|t| t.parse::<usize>().ok());
        if let Some(slot) = t.and_then(|t| per.get_mut(t)) {
            *slot += 1;
        }
    }
    per
}
