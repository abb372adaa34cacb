//! Memory, fairness and reply bounds on the data path, measured on a real process: no reply
//! (however deep or large) fails another client's requests, everything held for one client
//! counts against its output limits, buffers go back after a burst, and a deadline measures a
//! server that stopped, not a queue behind a large reply.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{read_until_closed, Env, Setup};
use testkit::{encode_command, Client, FaultLink, Proxy, RedisServer, Reply};

/// A Lua table nested 7,000 levels deep: Redis returns it as one reply of 7,001 arrays.
const DEEP_EVAL: &str = "local t={} local c=t for i=1,7000 do c[1]={} c=c[1] end return t";

/// The tests here run one at a time. Each moves tens to hundreds of MB through a debug build,
/// and they measure RSS and how soon a limit acts: four of them at once on a 2-core machine
/// (the test harness runs four threads) measure each other instead.
static HEAVY: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits up to `timeout` for the proxy's log to contain `text`.
fn wait_for_log(env: &Env, text: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if env.proxy_log().contains(text) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    env.proxy_log().contains(text)
}

/// A resident-set figure of a process from /proc/<pid>/status (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_mib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS") / 1024
}

/// Sends one command on `s` and reads its raw reply, framed by the proxy's own decoder.
fn raw_cmd(s: &mut TcpStream, args: &[&str]) -> Vec<u8> {
    s.write_all(&encode_command(args)).expect("write");
    let mut dec = resp::ReplyDecoder::new(resp::Limits {
        max_bulk: usize::MAX,
        ..resp::Limits::default()
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        if let Some(n) = dec.decode(&buf).expect("a well-formed reply") {
            assert_eq!(n, buf.len(), "one reply, nothing after it");
            return buf;
        }
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "closed before the reply ended");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s
}

/// Pipelines `n` INCRs of `key` and counts the replies: (acknowledged, errors seen).
fn pipelined_incrs(addr: &str, key: &str, n: usize) -> (i64, Vec<Reply>) {
    let mut c = Client::connect(addr);
    c.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = c.stream().try_clone().expect("clone");
    let one = encode_command(&["INCR", key]);
    let writer = thread::spawn(move || {
        let mut buf = Vec::new();
        for _ in 0..n {
            buf.extend_from_slice(&one);
            if buf.len() > 16 * 1024 {
                w.write_all(&buf).expect("write");
                buf.clear();
            }
        }
        w.write_all(&buf).expect("write");
    });
    let mut acked = 0;
    let mut errors = Vec::new();
    for _ in 0..n {
        match c.read_reply().expect("a reply for every INCR") {
            Reply::Int(_) => acked += 1,
            other => errors.push(other),
        }
    }
    writer.join().expect("writer");
    (acked, errors)
}

#[test]
fn no_reply_however_deep_or_large_fails_another_clients_writes() {
    let _one = one_at_a_time();
    let env = Setup::new(1)
        .workers(1)
        .option("server_connections", 1)
        .option("client_output_soft", "16mb")
        .option("client_output_hard", "64mb")
        .start();
    let backend = &env.redis[0];
    let mb32 = 32 * 1024 * 1024;
    assert_eq!(
        backend.cmd(&["SETRANGE", "big", &(mb32 - 1).to_string(), "x"]),
        Reply::Int(mb32 as i64)
    );
    let want_deep = raw_cmd(&mut connect(&backend.addr()), &["EVAL", DEEP_EVAL, "0"]);
    assert!(want_deep.len() > 7000 * 4, "Redis nests the table");

    let addr = env.addr();
    let incrs = {
        let addr = addr.clone();
        thread::spawn(move || pipelined_incrs(&addr, "counter", 20_000))
    };
    // The deep reply and a 32 MB reply, read by their client, while the INCRs share the
    // one backend connection.
    let mut a = connect(&addr);
    for _ in 0..5 {
        assert_eq!(raw_cmd(&mut a, &["EVAL", DEEP_EVAL, "0"]), want_deep);
    }
    let got = raw_cmd(&mut a, &["GET", "big"]);
    assert!(got.starts_with(b"$33554432\r\n"), "{:?}", &got[..16]);
    assert_eq!(got.len(), mb32 + 13);
    // 128 MB of replies to a client that does not read: over its 64 MB hard limit it is
    // closed. It reads only once the proxy said so, and then finds the end of its stream
    // before the end of its replies.
    let mut hog = Client::connect(&addr);
    let gets: Vec<u8> = (0..4)
        .flat_map(|_| encode_command(&["GET", "big"]))
        .collect();
    hog.send_raw(&gets).expect("send");
    let said = wait_for_log(
        &env,
        "over the client_output_hard limit",
        Duration::from_secs(60),
    );
    assert!(said, "the proxy closes the client: {}", env.proxy_log());
    hog.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0;
    let closed = loop {
        match hog.stream().read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received += n,
            Err(e) if testkit::is_timeout(&e) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        closed,
        "a client over its hard limit is closed ({received} bytes read)"
    );
    assert!(
        received < 4 * mb32,
        "closed only after all {received} bytes of its replies"
    );

    let (acked, errors) = incrs.join().expect("incrs");
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let counter = backend.cmd(&["GET", "counter"]);
    assert_eq!(
        counter,
        Reply::bulk(acked.to_string()),
        "every applied write acknowledged"
    );
    assert_eq!(acked, 20_000);
}

#[test]
fn replies_waiting_behind_a_slow_request_count_against_the_hard_limit() {
    let _one = one_at_a_time();
    let env = Setup::new(2)
        .workers(1)
        .option("timeout", 10_000)
        .option("client_output_soft", "8mb")
        .option("client_output_hard", "16mb")
        .start();
    // keys[i] lives on shard i.
    let keys = env.key_per_shard("k");
    let big = &keys[1];
    let mb4 = 4 * 1024 * 1024;
    assert_eq!(
        env.redis[1].cmd(&["SETRANGE", big, &(mb4 - 1).to_string(), "x"]),
        Reply::Int(mb4 as i64)
    );
    let pid = env.proxy.pid();
    let mut c = env.client();
    common::assert_pings(&mut c);
    let idle = status_kib(pid, "VmHWM") / 1024;
    // A script that keeps its shard busy for 4 s (under Redis' 5 s busy threshold), then 40
    // GETs of 4 MB on the other shard: their 160 MB of replies arrive while the first reply
    // is still missing.
    let slow = "local t=redis.call('TIME') local s=t[1]*1000000+t[2] \
                repeat local n=redis.call('TIME') until n[1]*1000000+n[2]-s > 4000000 return 1";
    let mut bytes = encode_command(&["EVAL", slow, "1", &keys[0]]);
    for _ in 0..40 {
        bytes.extend(encode_command(&["GET", big]));
    }
    c.send_raw(&bytes).expect("send");
    let got = read_until_closed(&mut c, Duration::from_secs(20));
    let peak = status_kib(pid, "VmHWM") / 1024;
    assert!(
        peak < idle + 16 + 48,
        "peak RSS {peak} MiB (idle {idle} MiB) with a 16 MiB hard limit"
    );
    assert!(
        got.is_empty(),
        "closed before the slow reply arrived, yet {} replies came",
        got.len()
    );
    let log = env.proxy_log();
    assert!(
        log.contains("over the client_output_hard limit"),
        "a log line says why: {log}"
    );
    // The proxy still serves others.
    common::assert_pings(&mut env.client());
}

#[test]
fn memory_goes_back_after_a_burst_of_large_requests_and_replies() {
    let _one = one_at_a_time();
    let env = Setup::new(1).workers(1).start();
    let pid = env.proxy.pid();
    let mut c = env.client();
    c.set_read_timeout(Some(Duration::from_secs(30)));
    common::assert_pings(&mut c);
    thread::sleep(Duration::from_millis(300));
    let idle = rss_mib(pid);
    let value = vec![b'v'; 100 * 1024 * 1024];
    let mut during = 0;
    for i in 0..4 {
        let key = format!("big{i}");
        let set: [&[u8]; 3] = [b"SET", key.as_bytes(), &value];
        assert_eq!(c.cmd(&set), Reply::ok());
        during = during.max(rss_mib(pid));
    }
    for i in 0..4 {
        let got = c.cmd(&["GET", &format!("big{i}")]);
        let len = got.as_bytes().map(<[u8]>::len);
        assert_eq!(
            len,
            Some(value.len()),
            "{:?}",
            got.as_str().filter(|_| len.is_none())
        );
        during = during.max(rss_mib(pid));
    }
    let mut after = rss_mib(pid);
    let t = Instant::now();
    while after > idle + 64 && t.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(100));
        after = rss_mib(pid);
    }
    assert!(
        after <= idle + 64,
        "RSS idle {idle} MiB, during {during} MiB, {after} MiB after {:?}",
        t.elapsed()
    );
    eprintln!("RSS idle {idle} MiB, during {during} MiB, after {after} MiB");
}

/// A rampart process with `timeout: 1000` over one server reached through `link`.
fn proxy_over(link: &FaultLink) -> Proxy {
    let port = testkit::free_port();
    let yml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  timeout: 1000\n  server_connections: 1\n  servers:\n   - {}:1 s0\n",
        link.addr()
    );
    Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", yml)
        .args([
            "-c",
            "{dir}/rampart.yml",
            "--workers",
            "1",
            "--no-stats",
            "--no-admin",
        ])
        .wait_port(port)
        .start()
}

#[test]
fn a_heavy_pipeline_fails_no_one_and_does_not_time_out() {
    let _one = one_at_a_time();
    // Redis builds every reply of the requests it read at once before it writes any: 100
    // GETs of 10 MB keep it silent for about a second on a loaded machine, which no proxy (nor
    // a client with a 1 s socket timeout) can tell from a frozen server. So the replies here
    // are smaller and the link slower: every 64 KiB chunk is held 5 ms, so 100 GETs of
    // 256 KiB take over 2 s to arrive, twice the timeout, while the server answers at once.
    let redis = RedisServer::start();
    let link = FaultLink::start(&redis.addr());
    let proxy = proxy_over(&link);
    let kb256 = 256 * 1024;
    assert_eq!(
        redis.cmd(&["SETRANGE", "v", &(kb256 - 1).to_string(), "x"]),
        Reply::Int(kb256 as i64)
    );
    assert_eq!(redis.cmd(&["SET", "small", "s"]), Reply::ok());
    link.delay(Duration::from_millis(5));
    let addr = proxy.addr();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = {
        let (addr, done) = (addr.clone(), done.clone());
        thread::spawn(move || {
            let mut c = Client::connect(&addr);
            let (mut ok, mut errors) = (0, Vec::new());
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match c.cmd(&["GET", "small"]) {
                    r if r == Reply::bulk("s") => ok += 1,
                    r => errors.push(r),
                }
            }
            (ok, errors)
        })
    };
    let mut heavy = Client::connect(&addr);
    heavy.set_read_timeout(Some(Duration::from_secs(30)));
    let gets: Vec<Vec<&str>> = (0..100).map(|_| vec!["GET", "v"]).collect();
    let t = Instant::now();
    let replies = heavy.pipeline(&gets);
    let took = t.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, errors) = other.join().expect("other client");
    let failed: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.as_bytes().map(<[u8]>::len) != Some(kb256))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 100 GETs failed in {took:?}: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        took > Duration::from_millis(1500),
        "the replies took {took:?}, not over the timeout"
    );
    assert!(
        errors.is_empty(),
        "the other client got {errors:?} ({ok} ok)"
    );
    assert!(ok > 0, "the other client was served meanwhile");
    eprintln!("100 GETs of 256 KiB in {took:?}; {ok} small GETs meanwhile");
}

#[test]
fn a_frozen_server_still_times_out_in_the_middle_of_a_large_reply() {
    let _one = one_at_a_time();
    let env = Setup::new(1).workers(1).option("timeout", 500).start();
    let mb10 = 10 * 1024 * 1024;
    assert_eq!(
        env.redis[0].cmd(&["SETRANGE", "v10", &(mb10 - 1).to_string(), "x"]),
        Reply::Int(mb10 as i64)
    );
    let mut c = env.client();
    assert_eq!(
        c.cmd(&["GET", "v10"]).as_bytes().map(<[u8]>::len),
        Some(mb10)
    );
    // The client stops reading: the proxy keeps reading the server (and holds what it may);
    // the server is frozen before it has sent everything.
    let gets: Vec<u8> = (0..20)
        .flat_map(|_| encode_command(&["GET", "v10"]))
        .collect();
    c.send_raw(&gets).expect("send");
    thread::sleep(Duration::from_millis(30));
    env.redis[0].stop();
    let t = Instant::now();
    let mut other = env.client();
    let r = other.cmd(&["GET", "v10"]);
    let waited = t.elapsed();
    env.redis[0].cont();
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("timed out")),
        "{r:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "timed out after {waited:?}"
    );
}
