//! Reload without dropping clients: clients pipeline commands through several reloads (a pool
//! added, a timeout changed, a replica added) with no error and no dropped connection; an
//! invalid file changes nothing; a ring change is refused unless forced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::{free_port, poll_until, send_signal, Client, Proxy, RedisServer, Reply};

fn pool(name: &str, port: u16, servers: &[&RedisServer], extra: &str) -> String {
    let mut y = format!("{name}:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  hash_tag: \"{{}}\"\n{extra}  servers:\n");
    for (i, s) in servers.iter().enumerate() {
        y.push_str(&format!("   - {}:1 s{i}\n", s.addr()));
    }
    y
}

/// POST with no body to the admin listener; the whole HTTP response.
fn post(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn info_pools(c: &mut Client) -> String {
    match c.cmd(&["INFO", "pools"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO pools: {other:?}"),
    }
}

#[test]
fn clients_keep_working_through_reloads_and_bad_files_change_nothing() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let (port, port2) = (free_port(), free_port());
    let first = pool("alpha", port, &[&a, &b], "  timeout: 1000\n");
    let admin = free_port();
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", &first)
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--workers", "2"])
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .wait_port(port)
        .start();
    let path = proxy.dir().join("rampart.yml");
    let addr = format!("127.0.0.1:{port}");

    // Clients pipelining the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..4)
        .map(|t| {
            let addr = addr.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                let mut rounds = 0u64;
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) && rounds < 100_000 {
                    let key = format!("{{t{t}}}:{}", rounds % 50);
                    let v = rounds.to_string();
                    let r = c.pipeline(&[
                        vec!["SET", key.as_str(), v.as_str()],
                        vec!["GET", key.as_str()],
                        vec!["INCR", "{t}:n"],
                    ]);
                    if r[0] != Reply::ok() || r[1] != Reply::bulk(&v) || r[2].as_int().is_none() {
                        errors.push(format!("{r:?}"));
                    }
                    rounds += 1;
                }
                (rounds, errors)
            })
        })
        .collect();

    let reload = |text: &str| {
        std::fs::write(&path, text).expect("write config");
        send_signal(proxy.pid(), "HUP");
    };
    let mut c = Client::connect(&addr);
    std::thread::sleep(Duration::from_millis(300));
    let accepted = |s: &RedisServer| -> i64 {
        s.info("stats")
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let b_before = accepted(&b);

    // 1. Add a pool on a new port.
    reload(&format!("{first}{}", pool("beta", port2, &[&a], "")));
    let up = poll_until(Duration::from_secs(5), || {
        Client::try_connect(&format!("127.0.0.1:{port2}")).ok()
    });
    let mut beta = up.expect("the new pool listens");
    assert_eq!(beta.cmd(&["PING"]), Reply::simple("PONG"));
    assert_eq!(beta.cmd(&["SET", "x", "1"]), Reply::ok());

    // 2. An invalid file changes nothing.
    reload("alpha:\n  listen: 127.0.0.1:1\n  hsah: nope\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        beta.cmd(&["GET", "x"]),
        Reply::bulk("1"),
        "the running pools still serve"
    );
    assert!(
        proxy.stderr().contains("reload refused"),
        "the refusal is logged:\n{}",
        proxy.stderr()
    );

    // 3. A changed timeout, and the second pool gone.
    let third = pool("alpha", port, &[&a, &b], "  timeout: 2000\n");
    reload(&third);
    let gone = poll_until(Duration::from_secs(5), || {
        Client::try_connect(&format!("127.0.0.1:{port2}"))
            .err()
            .map(|_| ())
    });
    assert!(gone.is_some(), "the removed pool stops listening");

    // 4. A ring change (a third server) is refused without force.
    let c3 = RedisServer::start();
    reload(&pool("alpha", port, &[&a, &b, &c3], "  timeout: 2000\n"));
    let refused = poll_until(Duration::from_secs(5), || {
        proxy.stderr().contains("would move").then_some(())
    });
    assert!(
        refused.is_some(),
        "a ring change needs force:\n{}",
        proxy.stderr()
    );
    assert!(
        !info_pools(&mut c).contains("shards=3"),
        "the ring did not change"
    );
    // Forced through the admin API, the same file applies.
    let forced = post(admin, "/api/reload?force=true");
    assert!(
        forced.contains("200 OK") && forced.contains("moved"),
        "{forced}"
    );
    assert!(
        info_pools(&mut c).contains("shards=3"),
        "the third server is on the ring"
    );

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for l in loaders {
        let (rounds, errors) = l.join().expect("loader");
        assert!(
            errors.is_empty(),
            "replies went wrong during reloads: {:?}",
            &errors[..errors.len().min(3)]
        );
        total += rounds;
    }
    assert!(total > 100, "the clients kept going ({total} rounds)");
    // `b` is only in pool alpha, which stayed: its connections were kept across the reloads
    // (the one new connection is this check's own).
    let b_after = accepted(&b);
    assert!(
        b_after - b_before <= 1,
        "the unchanged server got new connections: {b_before} -> {b_after}\n{}",
        proxy.stderr()
    );
    assert_eq!(
        c.cmd(&["PING"]),
        Reply::simple("PONG"),
        "a connection from before the reloads still works"
    );
    let log = proxy.stderr();
    assert!(log.matches("reload: applied").count() >= 2, "{log}");
}
