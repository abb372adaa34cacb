//! Commands about the connection itself, answered by rampart for its own clients in Redis'
//! formats (compared with a real redis-server 7): CLIENT LIST / INFO / KILL / REPLY /
//! NO-EVICT / NO-TOUCH / PAUSE / UNPAUSE, TIME and MONITOR.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{assert_pings, cmd, raw_exchange, read_until_closed, reference, Setup, POOL};
use testkit::{Client, Reply};

/// The `key=value` fields of one CLIENT LIST / CLIENT INFO line, in order.
fn fields(line: &str) -> Vec<(String, String)> {
    line.trim_end()
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn field(line: &[(String, String)], key: &str) -> String {
    line.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(r.as_bytes().unwrap_or_else(|| panic!("not a bulk: {r:?}")))
        .into_owned()
}

fn id_of(c: &mut Client) -> i64 {
    c.cmd(&["CLIENT", "ID"]).as_int().expect("CLIENT ID")
}

fn local_addr(c: &Client) -> String {
    c.stream().local_addr().expect("local addr").to_string()
}

/// The connection was closed by the peer (a read gives end of stream or an error).
fn is_closed(c: &mut Client) -> bool {
    c.set_read_timeout(Some(Duration::from_secs(5)));
    c.try_cmd(&["PING"]).is_err()
}

#[test]
fn client_list_and_info_have_redis_fields_and_the_pool() {
    let env = Setup::new(2).workers(2).start();
    let r = reference();
    let mut direct = Client::connect(&r.addr());
    let want: Vec<String> = fields(&text(&direct.cmd(&["CLIENT", "INFO"])))
        .into_iter()
        .map(|(k, _)| k)
        .collect();

    let mut a = env.client();
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "alice"]), Reply::ok());
    let info = fields(&text(&a.cmd(&["CLIENT", "INFO"])));
    let mut keys: Vec<String> = info.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys.pop().as_deref(), Some("pool"), "pool= comes last");
    assert_eq!(
        keys, want,
        "the fields of redis-server's CLIENT INFO, in order"
    );
    assert_eq!(field(&info, "id"), id_of(&mut a).to_string());
    assert_eq!(field(&info, "addr"), local_addr(&a));
    assert_eq!(field(&info, "laddr"), env.addr());
    assert_eq!(field(&info, "name"), "alice");
    assert_eq!(field(&info, "cmd"), "client|info");
    assert_eq!(field(&info, "flags"), "N");
    assert_eq!(field(&info, "pool"), POOL);

    // Clients on both workers, each with its last command.
    let mut others: Vec<Client> = (0..3).map(|_| env.client()).collect();
    for (i, c) in others.iter_mut().enumerate() {
        assert_eq!(c.cmd(&["SET", &format!("k{i}"), "v"]), Reply::ok());
    }
    let list = text(&a.cmd(&["CLIENT", "LIST"]));
    assert!(list.ends_with('\n'), "{list:?}");
    let lines: Vec<Vec<(String, String)>> = list.lines().map(fields).collect();
    assert_eq!(lines.len(), 4, "{list}");
    for c in &others {
        let line = lines
            .iter()
            .find(|l| field(l, "addr") == local_addr(c))
            .unwrap_or_else(|| panic!("{} not in {list}", local_addr(c)));
        assert_eq!(field(line, "cmd"), "set");
        assert_eq!(field(line, "pool"), POOL);
    }
    let one = text(&a.cmd(&["CLIENT", "LIST", "ID", &id_of(&mut others[0]).to_string()]));
    assert_eq!(one.lines().count(), 1, "{one}");
    assert_eq!(field(&fields(&one), "addr"), local_addr(&others[0]));
    assert_eq!(text(&a.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"])), "");
    for bad in [
        cmd(&["CLIENT", "LIST", "TYPE", "nosuch"]),
        cmd(&["CLIENT", "LIST", "ID", "abc"]),
        cmd(&["CLIENT", "LIST", "FOO"]),
    ] {
        assert_eq!(a.cmd(&bad), direct.cmd(&bad), "{bad:?}");
    }
    // A client that left is no longer listed.
    let gone = local_addr(&others[2]);
    drop(others.pop());
    testkit::wait_until(Duration::from_secs(5), "the closed client leaves", || {
        !text(&a.cmd(&["CLIENT", "LIST"])).contains(&gone)
    });
}

#[test]
fn client_kill_old_form_and_filters() {
    let env = Setup::new(1).workers(2).start();
    let r = reference();
    let mut direct = Client::connect(&r.addr());
    let mut admin = env.client();

    // Old form: OK, and the client is closed; again: Redis' error.
    let mut victim = env.client();
    let addr = local_addr(&victim);
    assert_pings(&mut victim);
    assert_eq!(admin.cmd(&["CLIENT", "KILL", &addr]), Reply::ok());
    assert!(is_closed(&mut victim), "killed client still served");
    let again = cmd(&["CLIENT", "KILL", &addr]);
    assert_eq!(admin.cmd(&again), Reply::Error("ERR No such client".into()));
    assert_eq!(
        direct.cmd(&cmd(&["CLIENT", "KILL", "1.2.3.4:5"])),
        Reply::Error("ERR No such client".into())
    );

    // ID and ADDR filters count the clients killed.
    let mut v1 = env.client();
    let id = id_of(&mut v1);
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]),
        Reply::Int(1)
    );
    assert!(is_closed(&mut v1));
    let mut v2 = env.client();
    assert_pings(&mut v2);
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ADDR", &local_addr(&v2), "SKIPME", "yes"]),
        Reply::Int(1)
    );
    assert!(is_closed(&mut v2));

    // LADDR: every client of the listener but the caller (SKIPME defaults to yes).
    let mut many: Vec<Client> = (0..3).map(|_| env.client()).collect();
    for c in &mut many {
        assert_pings(c);
    }
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "LADDR", &env.addr()]),
        Reply::Int(3)
    );
    for c in &mut many {
        assert!(is_closed(c));
    }
    assert_pings(&mut admin);

    // USER default matches everyone; nobody else exists. TYPE pubsub matches no one.
    let mut u = env.client();
    assert_pings(&mut u);
    assert_eq!(
        admin.cmd(&[
            "CLIENT",
            "KILL",
            "USER",
            "default",
            "ID",
            &id_of(&mut u).to_string()
        ]),
        Reply::Int(1)
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]),
        Reply::Int(0)
    );
    for bad in [
        cmd(&["CLIENT", "KILL", "USER", "nobody"]),
        cmd(&["CLIENT", "KILL", "ID", "abc"]),
        cmd(&["CLIENT", "KILL", "ID", "0"]),
        cmd(&["CLIENT", "KILL", "SKIPME", "maybe"]),
        cmd(&["CLIENT", "KILL", "FOO", "bar"]),
        cmd(&["CLIENT", "KILL", "ADDR"]),
        cmd(&["CLIENT", "KILL", "TYPE", "nosuch"]),
    ] {
        assert_eq!(admin.cmd(&bad), direct.cmd(&bad), "{bad:?}");
    }

    // MAXAGE: only clients older than the age.
    let mut old = env.client();
    assert_pings(&mut old);
    std::thread::sleep(Duration::from_millis(2100));
    let mut young = env.client();
    assert_pings(&mut young);
    let list = text(&admin.cmd(&["CLIENT", "LIST"]));
    let line = list
        .lines()
        .map(fields)
        .find(|l| field(l, "addr") == local_addr(&old))
        .unwrap_or_else(|| panic!("old client not in {list}"));
    assert!(
        field(&line, "age").parse::<u64>().expect("age") >= 2,
        "{line:?}"
    );
    assert!(
        field(&line, "idle").parse::<u64>().expect("idle") >= 2,
        "{line:?}"
    );
    assert_eq!(field(&line, "cmd"), "ping");
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "MAXAGE", "1", "SKIPME", "yes"]),
        Reply::Int(1),
        "the admin is older too but skips itself: only the old client"
    );
    assert!(is_closed(&mut old));
    assert_pings(&mut young);

    // SKIPME no kills the caller too, after its reply.
    let mut me = env.client();
    let my_id = id_of(&mut me).to_string();
    assert_eq!(
        me.cmd(&["CLIENT", "KILL", "ID", &my_id, "SKIPME", "no"]),
        Reply::Int(1)
    );
    assert!(is_closed(&mut me));
}

#[test]
fn client_reply_drops_replies_in_order_like_redis() {
    let env = Setup::new(3).start();
    let r = reference();
    let mut script = Vec::new();
    for c in [
        cmd(&["SET", "a", "1"]),
        cmd(&["CLIENT", "REPLY", "SKIP"]),
        cmd(&["GET", "a"]),
        cmd(&["PING", "after-skip"]),
        cmd(&["CLIENT", "REPLY", "OFF"]),
        cmd(&["SET", "b", "2"]),
        cmd(&["GET", "b"]),
        cmd(&["MGET", "a", "b", "c", "d"]),
        cmd(&["PING", "silent"]),
        cmd(&["CLIENT", "REPLY", "SKIP"]),
        cmd(&["CLIENT", "REPLY", "ON"]),
        cmd(&["MGET", "a", "b", "c", "d"]),
        cmd(&["CLIENT", "REPLY", "MAYBE"]),
        cmd(&["QUIT"]),
    ] {
        script.extend_from_slice(&testkit::encode_command(&c));
    }
    let got = raw_exchange(&env.addr(), &script);
    let want = raw_exchange(&r.addr(), &script);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n$10\r\nafter-skip\r\n+OK\r\n*4\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n$-1\r\n-ERR syntax error\r\n+OK\r\n"
    );
}

/// RESET turns replies back on before it answers: after `CLIENT REPLY OFF` its `+RESET`
/// comes (else every later reply would answer the request before it); after `CLIENT REPLY
/// SKIP` it is dropped, as Redis drops it. Subscribed or not, the bytes are Redis' own.
#[test]
fn reset_answers_after_client_reply_off_like_redis() {
    let env = Setup::new(3).start();
    let r = reference();
    let scripts: [&[&[&str]]; 3] = [
        &[
            &["CLIENT", "REPLY", "OFF"],
            &["RESET"],
            &["PING"],
            &["QUIT"],
        ],
        &[
            &["CLIENT", "REPLY", "SKIP"],
            &["RESET"],
            &["PING"],
            &["QUIT"],
        ],
        &[
            &["CLIENT", "REPLY", "OFF"],
            &["SUBSCRIBE", "a"],
            &["RESET"],
            &["PING"],
            &["QUIT"],
        ],
    ];
    let want = [
        "+RESET\r\n+PONG\r\n+OK\r\n",
        "+PONG\r\n+OK\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n+RESET\r\n+PONG\r\n+OK\r\n",
    ];
    for (words, want) in scripts.iter().zip(want) {
        let mut script = Vec::new();
        for c in *words {
            script.extend_from_slice(&testkit::encode_command(&cmd(c)));
        }
        let got = String::from_utf8_lossy(&raw_exchange(&env.addr(), &script)).into_owned();
        let direct = String::from_utf8_lossy(&raw_exchange(&r.addr(), &script)).into_owned();
        assert_eq!(got, direct, "{words:?}");
        assert_eq!(got, want, "{words:?}");
    }
}

#[test]
fn no_evict_and_no_touch_are_accepted() {
    let env = Setup::new(1).start();
    let mut c = env.client();
    for c2 in [
        cmd(&["CLIENT", "NO-EVICT", "on"]),
        cmd(&["CLIENT", "NO-EVICT", "OFF"]),
        cmd(&["CLIENT", "NO-TOUCH", "on"]),
        cmd(&["CLIENT", "NO-TOUCH", "off"]),
    ] {
        assert_eq!(c.cmd(&c2), Reply::ok(), "{c2:?}");
    }
    assert_eq!(
        c.cmd(&["CLIENT", "NO-EVICT", "maybe"]),
        Reply::Error("ERR syntax error".into())
    );
}

#[test]
fn client_pause_write_holds_writes_until_unpause() {
    let env = Setup::new(2).workers(2).start();
    let r = reference();
    let mut direct = Client::connect(&r.addr());
    let mut admin = env.client();
    for bad in [
        cmd(&["CLIENT", "PAUSE", "abc"]),
        cmd(&["CLIENT", "PAUSE", "-1"]),
        cmd(&["CLIENT", "PAUSE", "10", "SOMETIMES"]),
    ] {
        assert_eq!(admin.cmd(&bad), direct.cmd(&bad), "{bad:?}");
    }
    assert_eq!(admin.cmd(&["SET", "k", "before"]), Reply::ok());
    assert_eq!(
        admin.cmd(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        Reply::ok()
    );
    let mut w = env.client();
    // Reads pass.
    assert_eq!(w.cmd(&["GET", "k"]), Reply::bulk("before"));
    // A write waits, and so does the read behind it.
    w.send_raw(&testkit::encode_command(&["SET", "k", "after"]))
        .expect("send");
    w.send_raw(&testkit::encode_command(&["GET", "k"]))
        .expect("send");
    w.set_read_timeout(Some(Duration::from_millis(500)));
    let early = w.read_reply();
    assert!(
        early.as_ref().is_err_and(testkit::is_timeout),
        "a write answered during CLIENT PAUSE WRITE: {early:?}"
    );
    assert_eq!(admin.cmd(&["GET", "k"]), Reply::bulk("before"));
    assert_eq!(admin.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    w.set_read_timeout(Some(Duration::from_secs(5)));
    assert_eq!(w.read_reply().expect("SET reply"), Reply::ok());
    assert_eq!(w.read_reply().expect("GET reply"), Reply::bulk("after"));
}

#[test]
fn client_pause_all_holds_every_command_until_the_timeout() {
    let env = Setup::new(1).start();
    let mut admin = env.client();
    let mut c = env.client();
    assert_pings(&mut c);
    let start = Instant::now();
    assert_eq!(admin.cmd(&["CLIENT", "PAUSE", "700"]), Reply::ok());
    assert_eq!(c.cmd(&["PING"]), Reply::simple("PONG"));
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "PING answered {:?} into a 700 ms pause",
        start.elapsed()
    );
    assert_pings(&mut c);
}

#[test]
fn time_is_rampart_clock_in_redis_format() {
    let env = Setup::new(1).start();
    let mut c = env.client();
    let r = c.cmd(&["TIME"]);
    let parts = r.as_array().unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(parts.len(), 2, "{r:?}");
    let secs: u64 = parts[0]
        .as_str()
        .expect("seconds")
        .parse()
        .expect("seconds");
    let micros: u64 = parts[1].as_str().expect("micros").parse().expect("micros");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(secs.abs_diff(now) <= 5, "TIME {secs} vs now {now}");
    assert!(micros < 1_000_000);
}

/// A MONITOR line without its timestamp and `[...]` part: the quoted arguments.
fn monitor_args(line: &str) -> String {
    line.split_once("] ")
        .map(|(_, a)| a.to_string())
        .unwrap_or_default()
}

#[test]
fn monitor_streams_commands_with_pool_and_client_like_redis() {
    let env = Setup::new(2).start();
    let r = reference();
    let commands = [
        cmd(&["SET", "k", "v \"q\"\n"]),
        cmd(&["GET", "k"]),
        cmd(&["MGET", "k", "x"]),
    ];
    let mut lines = Vec::new();
    for addr in [env.addr(), r.addr()] {
        let mut m = Client::connect(&addr);
        assert_eq!(m.cmd(&["MONITOR"]), Reply::ok());
        let mut c = Client::connect(&addr);
        for x in &commands {
            c.cmd(x);
        }
        m.set_read_timeout(Some(Duration::from_secs(5)));
        let got: Vec<String> = (0..commands.len())
            .map(|_| {
                m.read_reply()
                    .expect("monitor line")
                    .as_str()
                    .expect("simple string")
                    .to_string()
            })
            .collect();
        // RESET leaves MONITOR mode: its reply, then nothing more.
        assert_eq!(m.cmd(&["RESET"]), Reply::simple("RESET"), "{addr}");
        assert_eq!(c.cmd(&["SET", "after", "reset"]), Reply::ok());
        assert_pings(&mut m);
        lines.push((got, local_addr(&c)));
    }
    let (ours, client) = &lines[0];
    let (theirs, _) = &lines[1];
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!(monitor_args(o), monitor_args(t), "{o} vs {t}");
        let (ts, rest) = o.split_once(' ').expect("timestamp");
        let (s, us) = ts.split_once('.').expect("seconds.micros");
        assert!(s.parse::<u64>().is_ok() && us.len() == 6, "{o}");
        assert!(
            rest.starts_with(&format!("[{POOL} {client}] ")),
            "{o}: pool and client address"
        );
    }
}

#[test]
fn a_monitor_that_does_not_read_is_dropped_and_never_slows_clients() {
    let env = Setup::new(1).option("client_output_soft", "65536").start();
    let mut m = env.client();
    assert_eq!(m.cmd(&["MONITOR"]), Reply::ok());
    // The monitor reads nothing; a client sends far more than its queue holds.
    let mut c = env.client();
    let value = "x".repeat(4096);
    for chunk in 0..40 {
        let batch: Vec<Vec<String>> = (0..100)
            .map(|i| cmd(&["SET", &format!("k{chunk}-{i}"), &value]))
            .collect();
        for reply in c.pipeline(&batch) {
            assert_eq!(reply, Reply::ok());
        }
    }
    // The monitor was dropped: its connection ends after what it had been sent.
    let got = read_until_closed(&mut m, Duration::from_secs(10));
    assert!(!got.is_empty(), "the monitor got no line at all");
    assert!(
        env.proxy_log().contains("MONITOR fell behind"),
        "{}",
        env.proxy_log()
    );
    assert_pings(&mut c);
}

#[test]
fn client_list_flags_a_client_inside_multi_and_a_resp3_one() {
    let env = Setup::new(1).start();
    let mut a = env.client();
    let mut b = env.client();
    let id = id_of(&mut a).to_string();
    let line_of_a = |b: &mut Client| {
        let list = text(&b.cmd(&["CLIENT", "LIST", "ID", &id]));
        fields(list.lines().next().unwrap_or_default())
    };
    assert_eq!(field(&line_of_a(&mut b), "flags"), "N");
    assert_eq!(field(&line_of_a(&mut b), "resp"), "2");
    assert_eq!(a.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(field(&line_of_a(&mut b), "flags"), "x", "inside MULTI");
    assert_eq!(a.cmd(&["DISCARD"]), Reply::ok());
    assert_eq!(field(&line_of_a(&mut b), "flags"), "N", "after DISCARD");
    // A RESP3 session says so in its own CLIENT INFO (a verbatim string in RESP3).
    let out = raw_exchange(&env.addr(), b"HELLO 3\r\nCLIENT INFO\r\nQUIT\r\n");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains(" resp=3 "),
        "CLIENT INFO after HELLO 3: {text}"
    );
}

#[test]
fn client_list_flags_a_blocked_client() {
    let env = Setup::new(1).start();
    let mut a = env.client();
    let mut b = env.client();
    let id = id_of(&mut a).to_string();
    let flags_of_a = |b: &mut Client| {
        let list = text(&b.cmd(&["CLIENT", "LIST", "ID", &id]));
        field(&fields(list.lines().next().unwrap_or_default()), "flags")
    };
    a.send_raw(&testkit::encode_command(&["BLPOP", "flags:q", "0"]))
        .expect("send");
    let seen = testkit::poll_until(Duration::from_secs(5), || {
        (flags_of_a(&mut b) == "b").then_some(())
    });
    assert!(
        seen.is_some(),
        "a blocked client shows b: {}",
        flags_of_a(&mut b)
    );
    assert_eq!(b.cmd(&["RPUSH", "flags:q", "x"]), Reply::Int(1));
    assert_eq!(
        a.read_reply().expect("BLPOP's reply"),
        Reply::Array(Some(vec![Reply::bulk("flags:q"), Reply::bulk("x")]))
    );
    assert_eq!(flags_of_a(&mut b), "N", "after the reply");
}

/// Two pools on one rampart: `open` (no users: loopback clients may run operator commands)
/// and `guarded` (users); their servers, the process and the two ports.
fn two_pools(
    args: &[&str],
) -> (
    (testkit::RedisServer, testkit::RedisServer),
    testkit::Proxy,
    u16,
    u16,
) {
    let (a, b) = (testkit::RedisServer::start(), testkit::RedisServer::start());
    let (pa, pb) = (testkit::free_port(), testkit::free_port());
    let yaml = format!(
        "open:\n  listen: 127.0.0.1:{pa}\n  servers:\n   - {}:1\nguarded:\n  listen: 127.0.0.1:{pb}\n  users:\n    - name: default\n      nopass: true\n      rules: on +@all -@admin ~*\n    - name: admin\n      nopass: true\n      rules: on +@all ~*\n  servers:\n   - {}:1\n",
        a.addr(),
        b.addr()
    );
    let proxy = testkit::Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("two.yml", &yaml)
        .args(["-c", "{dir}/two.yml", "--no-stats", "--no-admin"])
        .args(args.iter().copied())
        .wait_port(pa)
        .wait_port(pb)
        .start();
    ((a, b), proxy, pa, pb)
}

/// MONITOR shows the commands of the monitor's own pool only, as CLIENT LIST, KILL and
/// PAUSE act on it only: a loopback client of a pool without users must not watch another
/// pool's traffic, whose users and rules it is not bound by.
#[test]
fn monitor_shows_its_own_pool_only() {
    let (_servers, _proxy, pa, pb) = two_pools(&[]);
    let mut m = Client::connect(&format!("127.0.0.1:{pa}"));
    assert_eq!(m.cmd(&["MONITOR"]), Reply::ok());
    let mut other = Client::connect(&format!("127.0.0.1:{pb}"));
    assert_eq!(
        other.cmd(&["SET", "other-pool-key", "other-pool-value"]),
        Reply::ok()
    );
    let mut own = Client::connect(&format!("127.0.0.1:{pa}"));
    assert_eq!(own.cmd(&["SET", "own-key", "v"]), Reply::ok());
    m.set_read_timeout(Some(Duration::from_secs(5)));
    let line = m.read_reply().expect("a monitor line");
    let line = line.as_str().expect("simple string");
    assert!(
        line.contains("[open ") && line.contains("\"own-key\""),
        "the first line is {line}"
    );
}

/// SLOWLOG shows, counts and resets the entries of the caller's own pool only: its entries
/// hold the arguments (keys and values) of other pools' commands otherwise.
#[test]
fn slowlog_shows_its_own_pool_only() {
    let (_servers, _proxy, pa, pb) = two_pools(&["--slowlog-slower-than", "0"]);
    let mut open = Client::connect(&format!("127.0.0.1:{pa}"));
    let mut guarded = Client::connect(&format!("127.0.0.1:{pb}"));
    assert_eq!(
        guarded.cmd(&["SET", "guarded-key", "guarded-value"]),
        Reply::ok()
    );
    assert_eq!(open.cmd(&["SET", "open-key", "v"]), Reply::ok());
    let all = open.cmd(&["SLOWLOG", "GET", "-1"]);
    let shown = format!("{all:?}");
    assert!(shown.contains("open-key"), "{shown}");
    assert!(
        !shown.contains("guarded"),
        "another pool's command: {shown}"
    );
    assert_eq!(open.cmd(&["SLOWLOG", "RESET"]), Reply::ok());
    let mut admin = Client::connect(&format!("127.0.0.1:{pb}"));
    assert_eq!(admin.cmd(&["AUTH", "admin", "x"]), Reply::ok());
    let kept = format!("{:?}", admin.cmd(&["SLOWLOG", "GET", "-1"]));
    assert!(
        kept.contains("guarded-value"),
        "another pool's RESET cleared it: {kept}"
    );
    assert!(!kept.contains("open-key"), "{kept}");
}

/// A subscribed client is of type `pubsub`, as in Redis: `CLIENT LIST TYPE pubsub` lists it
/// and `TYPE normal` does not, `CLIENT KILL TYPE pubsub` closes it (and only it), and
/// `CLIENT KILL TYPE normal` leaves it alone.
#[test]
fn subscribers_are_clients_of_type_pubsub() {
    let env = Setup::new(1).start();
    let mut admin = env.client();
    let mut plain = env.client();
    let mut sub = env.client();
    let mut sub3 = env.client();
    let (plain_id, sub_id, sub3_id) = (id_of(&mut plain), id_of(&mut sub), id_of(&mut sub3));
    assert!(matches!(sub.cmd(&["SUBSCRIBE", "news"]), Reply::Array(_)));
    sub3.send_raw(b"HELLO 3\r\n").unwrap();
    let _ = sub3.read_reply();
    sub3.send_raw(b"SSUBSCRIBE news\r\n").unwrap();
    let ids = |c: &mut Client, kind: &str| -> Vec<i64> {
        let r = c.cmd(&["CLIENT", "LIST", "TYPE", kind]);
        text(&r)
            .lines()
            .map(|l| field(&fields(l), "id").parse().expect("id"))
            .collect()
    };
    testkit::wait_until(Duration::from_secs(5), "both subscribed", || {
        let mut p = ids(&mut admin, "pubsub");
        p.sort_unstable();
        p == [sub_id, sub3_id]
    });
    let normal = ids(&mut admin, "normal");
    assert!(normal.contains(&plain_id), "{normal:?}");
    assert!(
        !normal.contains(&sub_id) && !normal.contains(&sub3_id),
        "{normal:?}"
    );
    assert_eq!(
        admin.cmd(&[
            "CLIENT",
            "KILL",
            "TYPE",
            "normal",
            "ID",
            &plain_id.to_string()
        ]),
        Reply::Int(1)
    );
    assert_eq!(
        admin.cmd(&[
            "CLIENT",
            "KILL",
            "TYPE",
            "normal",
            "ID",
            &sub_id.to_string()
        ]),
        Reply::Int(0)
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]),
        Reply::Int(2)
    );
    assert!(is_closed(&mut sub) && is_closed(&mut plain));
    assert_pings(&mut admin);
}

/// `CLIENT LIST` counts a client's channels, patterns and shard channels (`sub=`, `psub=`,
/// `ssub=`) as Redis does: after subscribing, after leaving some, after RESET.
#[test]
fn client_list_counts_the_subscriptions_as_redis_does() {
    let env = Setup::new(2).start();
    let reference = reference();
    // Each side: its subscriber, its id, and a client that lists it.
    let mut sides: Vec<(Client, String, Client)> = [env.addr(), reference.addr()]
        .iter()
        .map(|a| {
            let mut c = Client::connect(a);
            let id = id_of(&mut c).to_string();
            (c, id, Client::connect(a))
        })
        .collect();
    // Each step and the replies it gets.
    let steps: [(&[&str], usize); 6] = [
        (&["SUBSCRIBE", "a", "b", "c"], 3),
        (&["PSUBSCRIBE", "p*", "q*"], 2),
        (&["SSUBSCRIBE", "s"], 1),
        (&["UNSUBSCRIBE", "b"], 1),
        (&["PUNSUBSCRIBE"], 2),
        (&["RESET"], 1),
    ];
    for (step, replies) in steps {
        let mut seen = Vec::new();
        for (c, id, lister) in &mut sides {
            let mut raw = format!("*{}\r\n", step.len());
            for w in step {
                raw.push_str(&format!("${}\r\n{w}\r\n", w.len()));
            }
            c.send_raw(raw.as_bytes()).unwrap();
            for _ in 0..replies {
                c.read_reply().expect("a reply");
            }
            let line = text(&lister.cmd(&["CLIENT", "LIST", "ID", id.as_str()]));
            let f = fields(&line);
            let counts: Vec<String> = ["flags", "sub", "psub", "ssub"]
                .iter()
                .map(|k| format!("{k}={}", field(&f, k)))
                .collect();
            seen.push(counts);
        }
        assert_eq!(seen[0], seen[1], "after {step:?}: rampart, then Redis");
    }
}

/// A listener on an IPv6 socket that IPv4 clients reach (here `[::ffff:127.0.0.1]`, as on a
/// dual-stack `[::]` listener): a client from 127.0.0.1 arrives as `::ffff:127.0.0.1` and is
/// on loopback, so it may run the operator commands of a pool without users.
#[test]
fn an_ipv4_client_of_an_ipv6_listener_counts_as_loopback() {
    let server = testkit::RedisServer::start();
    let port = testkit::free_port();
    let yaml = format!(
        "mapped:\n  listen: \"[::ffff:127.0.0.1]:{port}\"\n  servers:\n   - {}:1\n",
        server.addr()
    );
    let _proxy = testkit::Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("mapped.yml", &yaml)
        .args(["-c", "{dir}/mapped.yml", "--no-stats", "--no-admin"])
        .wait_port(port)
        .start();
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    let list = c.cmd(&["CLIENT", "LIST"]);
    let list = list.as_str().expect("CLIENT LIST's text").to_string();
    assert!(list.contains("addr=[::ffff:127.0.0.1]:"), "{list}");
    assert_eq!(c.cmd(&["CLIENT", "KILL", "ID", "999999"]), Reply::Int(0));
    assert_eq!(c.cmd(&["MONITOR"]), Reply::ok());
}
