//! Users and ACLs at the proxy, and the command policy, against real redis-servers: AUTH,
//! HELLO AUTH and redis-cli's `--user`, the user's rules per command (keys by access,
//! channels, MULTI), the ACL command, the failed-AUTH back-off, denied, renamed and
//! dangerous commands, and who may run operator commands. The backends have a password of
//! their own (`redis_auth`) that no proxy user knows.

mod common;
#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{assert_err_contains, raw_exchange, Setup};
use rampart_commands::acl::hex;
use testkit::{wait_until, Client, RedisServer, Reply};

const BACKEND_PW: &str = "backend-pw-9f3";
const APP_PW: &str = "app-pw-1";
const OPS_PW: &str = "ops-pw-2";
const NOPERM_KEY: &str =
    "NOPERM this user has no permissions to access one of the keys used as arguments";
const NOPERM_CHANNEL: &str =
    "NOPERM this user has no permissions to access one of the channels used as arguments";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn hash(pw: &str) -> String {
    hex(&rampart_config::sha256(pw.as_bytes()))
}

/// The `users:` value: `default` (password `default-pw`, reads and ACL WHOAMI), `app` (cache keys and
/// chan channels), `ops` (everything), `gone` (off).
fn users() -> String {
    format!(
        "\n    - name: default\n      password_sha256: {}\n      rules: on +@read +acl|whoami ~*\n    - name: app\n      password_sha256: {}\n      rules: on +@read +@write +@pubsub +@transaction -@dangerous +acl|whoami ~cache:* &chan:*\n    - name: ops\n      password_env: ACL_TEST_OPS_PW\n      rules: on +@all ~* &*\n    - name: gone\n      nopass: true\n      rules: off +@all ~*\n",
        hash("default-pw"),
        hash(APP_PW)
    )
}

/// Two shards with a backend password, and the users above.
fn start() -> common::Env {
    Setup::new(2)
        .password(BACKEND_PW)
        .option("users", users())
        .env("ACL_TEST_OPS_PW", OPS_PW)
        .env("RAMPART_LOG", "info")
        .start()
}

fn login(env: &common::Env, user: &str, pw: &str) -> Client {
    let mut c = env.client();
    assert_eq!(c.cmd(&["AUTH", user, pw]), Reply::ok(), "AUTH {user}");
    c
}

/// Reload `env`'s rampart with the file `yaml` and wait until it logs the reload.
fn reload_with(env: &common::Env, yaml: &str) {
    let before = env.proxy.stderr().matches("reload: ").count();
    std::fs::write(env.proxy.dir().join("x.yml"), yaml).expect("write");
    testkit::send_signal(env.proxy.pid(), "HUP");
    wait_until(Duration::from_secs(10), "the reload", || {
        env.proxy.stderr().matches("reload: ").count() > before
    });
}

fn err(text: &str) -> Reply {
    Reply::Error(text.to_string())
}

#[test]
fn users_authenticate_with_redis_replies_and_the_backend_password_is_not_one() {
    let env = start();
    let mut c = env.client();
    assert_eq!(c.cmd(&["GET", "k"]), err("NOAUTH Authentication required."));
    // The backends' password is no user's password at the proxy.
    assert_eq!(c.cmd(&["AUTH", BACKEND_PW]), err(WRONGPASS));
    assert_eq!(c.cmd(&["AUTH", "app", "wrong"]), err(WRONGPASS));
    assert_eq!(c.cmd(&["AUTH", "nosuch", APP_PW]), err(WRONGPASS));
    assert_eq!(c.cmd(&["AUTH", "gone", "x"]), err(WRONGPASS), "an off user");
    assert_eq!(c.cmd(&["GET", "k"]), err("NOAUTH Authentication required."));
    // AUTH <password> is the default user.
    assert_eq!(c.cmd(&["AUTH", "default-pw"]), Reply::ok());
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]), Reply::bulk("default"));
    assert_eq!(c.cmd(&["AUTH", "app", APP_PW]), Reply::ok());
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]), Reply::bulk("app"));
    assert_eq!(c.cmd(&["SET", "cache:a", "1"]), Reply::ok());
    // RESET: nobody again.
    assert_eq!(c.cmd(&["RESET"]), Reply::simple("RESET"));
    assert_eq!(c.cmd(&["GET", "k"]), err("NOAUTH Authentication required."));
    // HELLO with AUTH, in RESP2 and RESP3 (a map).
    let mut h = env.client();
    let r = h.cmd(&["HELLO", "2", "AUTH", "app", APP_PW]);
    assert_eq!(r.as_array().map(<[Reply]>::len), Some(14), "{r:?}");
    assert_eq!(h.cmd(&["ACL", "WHOAMI"]), Reply::bulk("app"));
    let raw = raw_exchange(
        &env.addr(),
        format!("HELLO 3 AUTH ops {OPS_PW}\r\nACL WHOAMI\r\nQUIT\r\n").as_bytes(),
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("%7\r\n") && text.contains("$3\r\nops\r\n+OK\r\n"),
        "{text}"
    );
    let bad = raw_exchange(&env.addr(), b"HELLO 3 AUTH app nope\r\nQUIT\r\n");
    assert!(String::from_utf8_lossy(&bad).starts_with(&format!("-{WRONGPASS}\r\n")));
    // The backends still see rampart's own password only.
    assert_eq!(env.backend(0).cmd(&["PING"]), Reply::simple("PONG"));
    // redis-cli with --user/--pass.
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &env.port.to_string(),
            "--user",
            "app",
            "--pass",
            APP_PW,
        ])
        .args(["--no-auth-warning", "GET", "cache:a"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &env.port.to_string(),
            "--user",
            "app",
            "--pass",
            APP_PW,
        ])
        .args(["--no-auth-warning", "GET", "secret:a"])
        .output()
        .expect("redis-cli");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOPERM"));
}

#[test]
fn a_nopass_default_user_needs_no_auth_and_keeps_its_rules() {
    let env = Setup::new(2)
        .option(
            "users",
            "\n    - name: default\n      nopass: true\n      rules: on +@read +ping ~pub:*\n",
        )
        .start();
    let mut c = env.client();
    assert_eq!(c.cmd(&["PING"]), Reply::simple("PONG"));
    assert_eq!(c.cmd(&["GET", "pub:1"]), Reply::nil());
    assert_eq!(c.cmd(&["GET", "priv:1"]), err(NOPERM_KEY));
    assert_eq!(
        c.cmd(&["SET", "pub:1", "x"]),
        err("NOPERM this user has no permissions to run the 'set' command")
    );
    assert_eq!(
        c.cmd(&["ACL", "WHOAMI"]),
        err("NOPERM this user has no permissions to run the 'acl|whoami' command")
    );
}

#[test]
fn rules_are_checked_per_command_key_and_channel_across_shards() {
    let env = start();
    let mut app = login(&env, "app", APP_PW);
    assert_eq!(app.cmd(&["SET", "cache:1", "a"]), Reply::ok());
    assert_eq!(app.cmd(&["SET", "other", "a"]), err(NOPERM_KEY));
    // Every key of a split command is checked; nothing runs when one is denied.
    let keys: Vec<String> = (0..20).map(|i| format!("cache:{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.push(k.clone());
        mset.push("v".into());
    }
    assert_eq!(app.cmd(&mset), Reply::ok());
    let mut bad = mset.clone();
    bad[1] = "cache:new".into();
    bad.push("secret:1".into());
    bad.push("v".into());
    assert_eq!(app.cmd(&bad), err(NOPERM_KEY));
    assert_eq!(
        app.cmd(&["EXISTS", "cache:new"]),
        Reply::Int(0),
        "half applied"
    );
    let holders: Vec<usize> = keys.iter().map(|k| env.shard_holding(k)).collect();
    assert!(
        holders.contains(&0) && holders.contains(&1),
        "keys on both shards"
    );
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().cloned());
    assert_eq!(app.cmd(&mget).as_array().map(<[Reply]>::len), Some(20));
    mget.push("secret:2".into());
    assert_eq!(app.cmd(&mget), err(NOPERM_KEY));
    assert_eq!(
        app.cmd(&["FLUSHALL"]),
        err("NOPERM this user has no permissions to run the 'flushall' command")
    );
    assert_eq!(
        app.cmd(&["CONFIG", "GET", "maxmemory"]),
        err("NOPERM this user has no permissions to run the 'config|get' command")
    );
    assert_eq!(
        app.cmd(&["KEYS", "*"]),
        err("NOPERM this user has no permissions to run the 'keys' command")
    );
    assert_eq!(app.cmd(&["PUBLISH", "chan:1", "m"]), Reply::Int(0));
    assert_eq!(app.cmd(&["PUBLISH", "other", "m"]), err(NOPERM_CHANNEL));
    // PSUBSCRIBE: the pattern must be an allowed pattern, literally (Redis 7.0).
    let mut sub = login(&env, "app", APP_PW);
    assert_eq!(sub.cmd(&["PSUBSCRIBE", "chan:1*"]), err(NOPERM_CHANNEL));
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "chan:1", "nope"]),
        err(NOPERM_CHANNEL)
    );
    let r = sub.cmd(&["PSUBSCRIBE", "chan:*"]);
    assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    // A read-only default user: reads anywhere, no writes.
    let mut d = login(&env, "default", "default-pw");
    assert_eq!(d.cmd(&["GET", "cache:1"]), Reply::bulk("v"));
    assert_eq!(
        d.cmd(&["DEL", "cache:1"]),
        err("NOPERM this user has no permissions to run the 'del' command")
    );
}

#[test]
fn a_denied_command_inside_multi_aborts_exec_and_nothing_is_applied() {
    let env = start();
    let mut app = login(&env, "app", APP_PW);
    assert_eq!(app.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        app.cmd(&["SET", "cache:{t}1", "a"]),
        Reply::simple("QUEUED")
    );
    assert_eq!(app.cmd(&["SET", "other{t}", "b"]), err(NOPERM_KEY));
    assert_eq!(
        app.cmd(&["FLUSHALL"]),
        err("NOPERM this user has no permissions to run the 'flushall' command")
    );
    assert_eq!(
        app.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    for i in 0..2 {
        assert_eq!(env.backend(i).cmd(&["EXISTS", "cache:{t}1"]), Reply::Int(0));
    }
    assert_eq!(app.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        app.cmd(&["SET", "cache:{t}1", "a"]),
        Reply::simple("QUEUED")
    );
    assert_eq!(app.cmd(&["EXEC"]), Reply::Array(Some(vec![Reply::ok()])));
}

#[test]
fn the_acl_command_answers_from_the_configuration_and_never_shows_a_password() {
    let env = start();
    let mut ops = login(&env, "ops", OPS_PW);
    let cats = ops.cmd(&["ACL", "CAT"]);
    assert_eq!(cats.as_array().map(<[Reply]>::len), Some(21));
    let reads = ops.cmd(&["ACL", "CAT", "read"]);
    let reads = reads.as_array().expect("array");
    assert!(reads.contains(&Reply::bulk("get")) && !reads.contains(&Reply::bulk("set")));
    assert_eq!(
        ops.cmd(&["ACL", "CAT", "nosuch"]),
        err("ERR Unknown category 'nosuch'")
    );
    let list = ops.cmd(&["ACL", "LIST"]);
    let lines: Vec<String> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let app = lines
        .iter()
        .find(|l| l.starts_with("user app "))
        .expect("app");
    assert!(
        app.starts_with(&format!(
            "user app on #{} ~cache:* resetchannels &chan:* -@all +@read",
            hash(APP_PW)
        )),
        "{app}"
    );
    let all = lines.join("\n");
    for secret in [APP_PW, OPS_PW, "default-pw", BACKEND_PW] {
        assert!(!all.contains(secret), "{secret} in ACL LIST");
    }
    assert!(
        all.contains(&format!("user ops on #{} ~* &* +@all", hash(OPS_PW))),
        "{all}"
    );
    let get = ops.cmd(&["ACL", "GETUSER", "app"]);
    let fields = get.as_array().expect("array");
    assert_eq!(fields.len(), 12);
    assert_eq!(fields[0], Reply::bulk("flags"));
    assert_eq!(fields[1], Reply::bulks(["on"]));
    assert_eq!(fields[3], Reply::bulks([hash(APP_PW)]));
    assert_eq!(fields[6], Reply::bulk("keys"));
    assert_eq!(fields[7], Reply::bulk("~cache:*"));
    assert_eq!(ops.cmd(&["ACL", "GETUSER", "nosuch"]), Reply::nil());
    let raw = raw_exchange(
        &env.addr(),
        format!("HELLO 3 AUTH ops {OPS_PW}\r\nACL GETUSER gone\r\nQUIT\r\n").as_bytes(),
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("%6\r\n$5\r\nflags\r\n~2\r\n$3\r\noff\r\n$6\r\nnopass\r\n"),
        "{text}"
    );
    // Not an admin: NOPERM.
    let mut app = login(&env, "app", APP_PW);
    assert_err_contains(&app.cmd(&["ACL", "LIST"]), &["NOPERM", "acl|list"]);
    // Users live in rampart's configuration; nothing reaches a server.
    let before = env.backend(0).cmd(&["ACL", "LIST"]);
    let r = ops.cmd(&["ACL", "SETUSER", "evil", "on", ">x", "+@all"]);
    assert_err_contains(&r, &["configuration"]);
    assert_err_contains(&ops.cmd(&["ACL", "DELUSER", "app"]), &["configuration"]);
    assert_eq!(env.backend(0).cmd(&["ACL", "LIST"]), before);
    assert_eq!(
        ops.cmd(&["AUTH", "app", APP_PW]),
        Reply::ok(),
        "app still there"
    );
}

/// Reads one reply line (`+OK`, `-ERR ...`) from a raw connection.
fn line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => out.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}

/// A connection to `port` from the loopback address `from` (another client address).
fn connect_from(from: &str, port: u16) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("addr");
    sock.bind(&local.into()).expect("bind");
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    sock.connect(&to.into()).expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn auth_raw(s: &mut TcpStream, user: &str, pw: &str) -> (String, Duration) {
    let t = Instant::now();
    s.write_all(&testkit::encode_command(&["AUTH", user, pw]))
        .expect("write");
    let reply = line(s);
    (reply, t.elapsed())
}

#[test]
fn failed_auth_is_slowed_per_address_counted_and_logged_without_the_password() {
    let env = start();
    let mut bad = connect_from("127.0.0.1", env.port);
    let mut took = Vec::new();
    for i in 0..8 {
        let (r, d) = auth_raw(&mut bad, "app", &format!("guess-{i}"));
        assert_eq!(r, format!("-{WRONGPASS}"));
        took.push(d);
    }
    // Five failures are free; then 100 ms, 200 ms, 400 ms before each check.
    for d in &took[..5] {
        assert!(*d < Duration::from_millis(90), "{took:?}");
    }
    assert!(took[5] >= Duration::from_millis(100), "{took:?}");
    assert!(took[6] >= Duration::from_millis(200), "{took:?}");
    assert!(took[7] >= Duration::from_millis(400), "{took:?}");
    // The right password from the slowed address waits too (800 ms), then works.
    let (r, d) = auth_raw(&mut bad, "app", APP_PW);
    assert_eq!(r, "+OK");
    assert!(d >= Duration::from_millis(800), "{d:?}");
    // Another address is not slowed, while the first one waits.
    let mut slow = connect_from("127.0.0.1", env.port);
    slow.write_all(&testkit::encode_command(&["AUTH", "app", "guess-x"]))
        .expect("write");
    let mut other = connect_from("127.0.0.2", env.port);
    let (r, d) = auth_raw(&mut other, "app", APP_PW);
    assert_eq!(r, "+OK");
    assert!(d < Duration::from_millis(200), "{d:?}");
    // An already authenticated client of the slowed address is not slowed either.
    let mut ok = login(&env, "ops", OPS_PW);
    let t = Instant::now();
    assert_eq!(ok.cmd(&["SET", "k", "v"]), Reply::ok());
    assert!(t.elapsed() < Duration::from_millis(200));
    assert_eq!(line(&mut slow), format!("-{WRONGPASS}"));
    // Counted in INFO and /metrics-equivalent counters; logged with user and address.
    let info = ok.cmd(&["INFO", "stats"]);
    let info = info.as_str().expect("info").to_string();
    assert!(info.contains("auth_failures:9\r\n"), "{info}");
    let log = env.proxy.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("AUTH failed")).collect();
    assert_eq!(lines.len(), 9, "{log}");
    assert!(
        lines[0].contains("app") && lines[0].contains("127.0.0.1:"),
        "{}",
        lines[0]
    );
    assert!(!log.contains("guess-"), "a password reached the log");
}

/// A flood of failed AUTH from many addresses (each failing once, so none is slowed): every
/// failure is counted, but at most 10 lines a second reach the log, and a later line says
/// how many were left out.
#[test]
fn a_flood_of_failed_auth_is_counted_but_logged_at_a_bounded_rate() {
    let env = start();
    const FAILURES: usize = 200;
    let started = Instant::now();
    for i in 0..FAILURES {
        let from = format!("127.0.{}.{}", 10 + i / 200, 1 + i % 200);
        let mut s = connect_from(&from, env.port);
        let (r, _) = auth_raw(&mut s, "app", "guess");
        assert_eq!(r, format!("-{WRONGPASS}"));
    }
    // One more failure after the window: its line says how many were left out.
    std::thread::sleep(Duration::from_millis(1100));
    let mut last = connect_from("127.0.20.1", env.port);
    assert_eq!(
        auth_raw(&mut last, "app", "guess").0,
        format!("-{WRONGPASS}")
    );
    // One-second windows the failures spanned (a slow machine spreads them over more).
    let windows = started.elapsed().as_secs() + 2;
    let mut ok = login(&env, "ops", OPS_PW);
    let info = ok.cmd(&["INFO", "stats"]);
    let info = info.as_str().expect("info").to_string();
    assert!(
        info.contains(&format!("auth_failures:{}\r\n", FAILURES + 1)),
        "{info}"
    );
    let log = env.proxy.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("AUTH failed")).collect();
    println!(
        "{} failed AUTH: {} log lines; the last: {:?}",
        FAILURES + 1,
        lines.len(),
        lines.last()
    );
    // At most 10 lines in each one-second window the failures spanned: far fewer than the
    // failures (the loop takes well under a second on an idle machine).
    let most = 10 * windows as usize;
    assert!(
        lines.len() <= most,
        "{} lines for {} failures over at most {windows} windows",
        lines.len(),
        FAILURES + 1
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("more failed AUTH since the last line")),
        "{log}"
    );
}

#[test]
fn denied_and_renamed_commands_answer_as_unknown_ones() {
    let r = RedisServer::start();
    let mut direct = Client::connect(&r.addr());
    let env = Setup::new(2)
        .option("deny_commands", "[KEYS, FLUSHALL, OBJECT ENCODING]")
        .option(
            "rename_commands",
            "\n    DEL: REMOVE_8f2a\n    CONFIG: \"\"",
        )
        .option("admin_broadcast", "true")
        .start();
    let mut c = env.client();
    for call in [
        vec!["KEYS", "*"],
        vec!["FLUSHALL"],
        vec!["DEL", "a", "b"],
        vec!["CONFIG", "GET", "maxmemory"],
    ] {
        // The same words as Redis for a command it does not have.
        let mut unknown = call.clone();
        unknown[0] = "NOSUCHCMD";
        let want = match direct.cmd(&unknown) {
            Reply::Error(e) => Reply::Error(e.replace("NOSUCHCMD", call[0])),
            other => panic!("{other:?}"),
        };
        assert_eq!(c.cmd(&call), want, "{call:?}");
    }
    assert_err_contains(&c.cmd(&["OBJECT", "ENCODING", "k"]), &["unknown command"]);
    for i in 0..30 {
        assert_eq!(c.cmd(&["SET", &format!("k{i}"), "v"]), Reply::ok());
    }
    let mut remove = vec!["REMOVE_8f2a".to_string()];
    remove.extend((0..30).map(|i| format!("k{i}")));
    assert_eq!(
        c.cmd(&remove),
        Reply::Int(30),
        "the renamed DEL splits over shards"
    );
    assert_eq!(env.total_keys(), 0);
    assert_eq!(
        c.cmd(&["remove_8F2A", "nothing"]),
        Reply::Int(0),
        "any case"
    );
    // CLIENT PAUSE WRITE holds a renamed write as the write it is.
    let mut op = env.client();
    assert_eq!(op.cmd(&["CLIENT", "PAUSE", "300", "WRITE"]), Reply::ok());
    let t = Instant::now();
    assert_eq!(c.cmd(&["REMOVE_8f2a", "nothing"]), Reply::Int(0));
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // COMMAND knows the commands by the names the pool's clients use, as Redis does after
    // `rename-command`: the new name has the command's entry, the old and denied ones none.
    let del = match direct.cmd(&["COMMAND", "INFO", "DEL"]) {
        Reply::Array(Some(mut one)) => one.remove(0),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        c.cmd(&["COMMAND", "INFO", "DEL", "REMOVE_8f2a", "KEYS"]),
        Reply::Array(Some(vec![Reply::nil(), del, Reply::nil()]))
    );
    assert_eq!(
        c.cmd(&["COMMAND", "GETKEYS", "REMOVE_8f2a", "a", "b"]),
        Reply::bulks(["a", "b"])
    );
    for old in ["DEL", "KEYS"] {
        assert_eq!(
            c.cmd(&["COMMAND", "GETKEYS", old, "a"]),
            Reply::Error("ERR Invalid command specified".into()),
            "{old}"
        );
    }
    // Inside MULTI an unknown command aborts EXEC, as in Redis.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_err_contains(&c.cmd(&["KEYS", "*"]), &["unknown command"]);
    assert_err_contains(&c.cmd(&["EXEC"]), &["EXECABORT"]);
}

#[test]
fn commands_that_change_a_whole_server_are_refused_unless_allowed() {
    let env = Setup::new(2).start();
    let mut c = env.client();
    for call in [
        vec!["SHUTDOWN"],
        vec!["BGSAVE"],
        vec!["DEBUG", "SLEEP", "0"],
        vec!["REPLICAOF", "127.0.0.1", "1"],
        vec!["MODULE", "LIST"],
        vec!["FAILOVER"],
        vec!["MIGRATE", "127.0.0.1", "1", "k", "0", "10"],
        vec!["SAVE"],
        vec!["BGREWRITEAOF"],
    ] {
        assert_err_contains(&c.cmd(&call), &["allow_commands"]);
    }
    // CLUSTER never reaches a server: rampart answers it as a server without cluster support
    // (or as the pool's cluster view).
    assert_err_contains(&c.cmd(&["CLUSTER", "INFO"]), &["cluster support disabled"]);
    assert_err_contains(
        &c.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        &["admin_broadcast", "allow_commands"],
    );
    assert_eq!(
        env.backend(0).cmd(&["PING"]),
        Reply::simple("PONG"),
        "still up"
    );
    let env = Setup::new(2)
        .option("allow_commands", "[BGSAVE, CONFIG SET, DEBUG]")
        .start();
    let mut c = env.client();
    assert_eq!(
        c.cmd(&["BGSAVE"]),
        Reply::simple("Background saving started")
    );
    // Sent on: the servers' own answer (they refuse DEBUG unless started to allow it).
    assert_err_contains(&c.cmd(&["DEBUG", "SLEEP", "0"]), &["enable-debug-command"]);
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        Reply::ok()
    );
    for r in env.on_each_backend(&["CONFIG", "GET", "maxmemory-policy"]) {
        assert_eq!(r, Reply::bulks(["maxmemory-policy", "allkeys-lru"]));
    }
    assert_err_contains(&c.cmd(&["SHUTDOWN"]), &["allow_commands"]);
    assert_err_contains(&c.cmd(&["CONFIG", "SET", "requirepass", "x"]), &["refused"]);
}

#[test]
fn operator_commands_follow_the_users_rules_when_a_pool_has_users() {
    let env = start();
    // On loopback, but a user without +@admin.
    let mut app = login(&env, "app", APP_PW);
    assert_eq!(
        app.cmd(&["CLIENT", "KILL", "ID", "999999"]),
        err("NOPERM this user has no permissions to run the 'client|kill' command")
    );
    assert_eq!(
        app.cmd(&["MONITOR"]),
        err("NOPERM this user has no permissions to run the 'monitor' command")
    );
    assert_err_contains(&app.cmd(&["CLIENT", "PAUSE", "10"]), &["NOPERM"]);
    assert_err_contains(
        &app.cmd(&["RAMPART", "SWITCHOVER", "shard0"]),
        &["NOPERM", "+@admin"],
    );
    // An admin user may; CLIENT LIST shows each client's user, CLIENT KILL USER picks them.
    let mut ops = login(&env, "ops", OPS_PW);
    let list = ops.cmd(&["CLIENT", "LIST"]);
    let list = list.as_str().expect("list").to_string();
    assert!(
        list.contains(" user=app ") && list.contains(" user=ops "),
        "{list}"
    );
    let mut app2 = login(&env, "app", APP_PW);
    let mut d = login(&env, "default", "default-pw");
    assert_eq!(
        ops.cmd(&["CLIENT", "KILL", "USER", "default"]),
        Reply::Int(1)
    );
    wait_until(
        Duration::from_secs(5),
        "the default user's client closed",
        || d.try_cmd(&["PING"]).is_err(),
    );
    assert_eq!(app2.cmd(&["GET", "cache:x"]), Reply::nil());
    assert_err_contains(
        &ops.cmd(&["CLIENT", "KILL", "USER", "nosuch"]),
        &["No such user"],
    );
    // HELLO runs for anyone (no_auth); its reply carries the client's id.
    let hello = app.cmd(&["HELLO", "2"]);
    let id = hello.as_array().and_then(|a| a[7].as_int()).expect("id");
    assert_eq!(
        ops.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]),
        Reply::Int(1)
    );
    wait_until(Duration::from_secs(5), "the killed client closed", || {
        app.try_cmd(&["PING"]).is_err()
    });
    let r = ops.cmd(&["RAMPART", "SWITCHOVER", "shard0"]);
    assert!(
        !matches!(&r, Reply::Error(e) if e.contains("NOPERM") || e.contains("loopback")),
        "{r:?}"
    );
}

#[test]
fn a_replica_set_with_a_backend_password_serves_proxy_users() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    replica.wait_replication_up(Duration::from_secs(10));
    assert_eq!(
        replica.cmd(&["CONFIG", "SET", "masterauth", BACKEND_PW]),
        Reply::ok()
    );
    for s in [&primary, &replica] {
        assert_eq!(
            s.cmd(&["CONFIG", "SET", "requirepass", BACKEND_PW]),
            Reply::ok()
        );
    }
    let port = testkit::free_port();
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  primary: {}\n  replicas:\n    - {}\n  read_policy: prefer-replica\n  redis_auth: {BACKEND_PW}\n  health_check:\n    interval: 100ms\n    rise: 1\n  users: {}",
        primary.addr(),
        replica.addr(),
        users()
    );
    let _proxy = testkit::Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("x.yml", &yaml)
        .args(["-c", "{dir}/x.yml", "--workers", "2", "--no-stats"])
        .env("ACL_TEST_OPS_PW", OPS_PW)
        .wait_port(port)
        .start();
    let addr = format!("127.0.0.1:{port}");
    let mut app = Client::connect(&addr);
    assert_eq!(app.cmd(&["AUTH", BACKEND_PW]), err(WRONGPASS));
    assert_eq!(app.cmd(&["AUTH", "app", APP_PW]), Reply::ok());
    wait_until(Duration::from_secs(10), "a write through the proxy", || {
        app.cmd(&["SET", "cache:r", "v"]) == Reply::ok()
    });
    assert_eq!(app.cmd(&["SET", "x", "v"]), err(NOPERM_KEY));
    wait_until(Duration::from_secs(10), "the write read back", || {
        app.cmd(&["GET", "cache:r"]) == Reply::bulk("v")
    });
    assert_eq!(app.cmd(&["GET", "x"]), err(NOPERM_KEY));
}

const REDIS_PY: &str = r#"
import sys, redis
from redis.backoff import NoBackoff
from redis.retry import Retry
port, app_pw = int(sys.argv[1]), sys.argv[2]
for proto in (3, 2):
    r = redis.Redis(host="127.0.0.1", port=port, username="app", password=app_pw, protocol=proto)
    assert r.set("cache:py", "v") is True
    assert r.get("cache:py") == b"v"
    assert r.acl_whoami() in ("app", b"app"), r.acl_whoami()
    try:
        r.get("secret:py")
        raise SystemExit("a denied key was read")
    except redis.exceptions.NoPermissionError as e:
        assert "keys" in str(e), e
    try:
        # No retries: redis-py retries a refused AUTH as a connection error by default.
        redis.Redis(host="127.0.0.1", port=port, username="app", password="nope",
                    protocol=proto, retry=Retry(NoBackoff(), 0)).ping()
        raise SystemExit("a wrong password was taken")
    except redis.exceptions.AuthenticationError:
        pass
print("ok")
"#;

/// redis-py 8 (pinned, `scripts/client-libs.sh`), RESP3 and RESP2, as an ACL user.
#[test]
fn redis_py_authenticates_as_a_user_and_sees_noperm() {
    let libs = common::client_libs();
    let env = start();
    let mut cmd = std::process::Command::new("python3");
    cmd.env("PYTHONPATH", libs.join("py"))
        .args(["-c", REDIS_PY, &env.port.to_string(), APP_PW]);
    common::run_script("redis-py as an ACL user", cmd);
}

/// A reload applies new rules to connected clients, disconnects the clients of a removed
/// user, and logs user names only.
#[test]
fn a_reload_gives_connected_clients_their_users_new_rules() {
    let env = start();
    let mut app = login(&env, "app", APP_PW);
    let mut d = login(&env, "default", "default-pw");
    assert_eq!(app.cmd(&["SET", "cache:r", "1"]), Reply::ok());
    // app loses its writes; default is removed.
    let yaml = env
        .yaml
        .replace("+@read +@write +@pubsub", "+@read +@pubsub")
        .replace(
            &format!(
                "    - name: default\n      password_sha256: {}\n      rules: on +@read +acl|whoami ~*\n",
                hash("default-pw")
            ),
            "",
        );
    assert_ne!(yaml, env.yaml);
    reload_with(&env, &yaml);
    let log = env.proxy.stderr();
    assert!(log.contains("users changed (app, ops, gone)"), "{log}");
    assert!(!log.contains(&hash(APP_PW)), "a hash reached the log");
    assert_eq!(
        app.cmd(&["SET", "cache:r", "2"]),
        err("NOPERM this user has no permissions to run the 'set' command")
    );
    assert_eq!(app.cmd(&["GET", "cache:r"]), Reply::bulk("1"));
    wait_until(
        Duration::from_secs(5),
        "the removed user's client closed",
        || d.try_cmd(&["GET", "cache:r"]).is_err(),
    );
}

/// A command queued in `MULTI` that a reload then denies (the user's rules, or the pool's
/// `deny_commands`) does not run at `EXEC`, even in a transaction that names no key: the
/// whole transaction is discarded with `EXECABORT`, as for any transaction a reload met.
#[test]
fn a_command_a_reload_denies_while_it_is_queued_does_not_run_at_exec() {
    let env = Setup::new(1)
        .password(BACKEND_PW)
        .option("admin_broadcast", "true")
        .option("users", users())
        .env("ACL_TEST_OPS_PW", OPS_PW)
        .env("RAMPART_LOG", "info")
        .start();
    let mut ops = login(&env, "ops", OPS_PW);
    assert_eq!(ops.cmd(&["SET", "kept", "1"]), Reply::ok());
    assert_eq!(ops.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(ops.cmd(&["FLUSHDB"]), Reply::simple("QUEUED"));
    // ops may no longer run dangerous commands (FLUSHDB is one).
    let yaml = env
        .yaml
        .replace("rules: on +@all ~* &*", "rules: on +@all -@dangerous ~* &*");
    assert_ne!(yaml, env.yaml);
    reload_with(&env, &yaml);
    let r = ops.cmd(&["EXEC"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.starts_with("EXECABORT")),
        "EXEC ran a command the reload denied: {r:?}"
    );
    assert_eq!(env.backend(0).cmd(&["EXISTS", "kept"]), Reply::Int(1));
    assert_eq!(
        ops.cmd(&["FLUSHDB"]),
        err("NOPERM this user has no permissions to run the 'flushdb' command")
    );

    // The same with a command the pool's policy denies from the next reload on.
    assert_eq!(ops.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(ops.cmd(&["DBSIZE"]), Reply::simple("QUEUED"));
    let denied = yaml.replace("  servers:\n", "  deny_commands: [DBSIZE]\n  servers:\n");
    assert_ne!(denied, yaml);
    reload_with(&env, &denied);
    let r = ops.cmd(&["EXEC"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.starts_with("EXECABORT")),
        "EXEC ran a command the reload denied: {r:?}"
    );
    // A transaction queued after the reload runs as usual.
    assert_eq!(ops.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(ops.cmd(&["PING"]), Reply::simple("QUEUED"));
    assert_eq!(
        ops.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::simple("PONG")]))
    );
}

/// A reload that drops `users:` altogether removes every user: their clients are closed, as
/// the clients of one removed user are, rather than left logged in with no rules at all (a
/// client held to `cache:*` could then write any key, without the backend password a new
/// client now needs).
#[test]
fn a_reload_that_removes_every_user_closes_their_clients() {
    let env = start();
    let mut app = login(&env, "app", APP_PW);
    let mut anonymous = env.client();
    assert_eq!(app.cmd(&["SET", "secret:r", "1"]), err(NOPERM_KEY));
    let yaml = env.yaml.replace(&format!("  users: {}\n", users()), "");
    assert_ne!(yaml, env.yaml);
    reload_with(&env, &yaml);
    assert!(env.proxy.stderr().contains("users changed ()"));
    // A new client needs the pool's (the servers') password now.
    assert_eq!(
        env.client().cmd(&["SET", "secret:r", "1"]),
        err("NOAUTH Authentication required.")
    );
    let got = app.try_cmd(&["SET", "secret:r", "2"]);
    assert!(
        got.is_err(),
        "the client of a removed user was served: {got:?}"
    );
    for i in 0..2 {
        assert_eq!(env.backend(i).cmd(&["EXISTS", "secret:r"]), Reply::Int(0));
    }
    // A client that never logged in stays, and logs in as a new one would.
    assert_eq!(
        anonymous.cmd(&["GET", "secret:r"]),
        err("NOAUTH Authentication required.")
    );
    assert_eq!(anonymous.cmd(&["AUTH", BACKEND_PW]), Reply::ok());
    assert_eq!(anonymous.cmd(&["EXISTS", "secret:r"]), Reply::Int(0));
}

/// A reload that turns a user `off` refuses its new logins only: its connected clients go
/// on with its rules, subscribed or not, as Redis' `off` leaves authenticated connections.
#[test]
fn a_user_turned_off_by_a_reload_keeps_its_clients_and_refuses_new_logins() {
    let env = start();
    let mut app = login(&env, "app", APP_PW);
    let mut sub = login(&env, "app", APP_PW);
    let r = sub.cmd(&["SUBSCRIBE", "chan:off"]);
    assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    let yaml = env.yaml.replace(
        "rules: on +@read +@write +@pubsub",
        "rules: off +@read +@write +@pubsub",
    );
    assert_ne!(yaml, env.yaml);
    reload_with(&env, &yaml);
    assert_eq!(env.client().cmd(&["AUTH", "app", APP_PW]), err(WRONGPASS));
    assert_eq!(app.cmd(&["SET", "cache:off", "1"]), Reply::ok());
    assert_eq!(app.cmd(&["SET", "secret:off", "1"]), err(NOPERM_KEY));
    assert_eq!(app.cmd(&["ACL", "WHOAMI"]), Reply::bulk("app"));
    assert_eq!(app.cmd(&["PUBLISH", "chan:off", "still"]), Reply::Int(1));
    sub.set_read_timeout(Some(Duration::from_secs(5)));
    assert_eq!(
        sub.read_reply().expect("the subscriber hears its channel"),
        Reply::Array(Some(vec![
            Reply::bulk("message"),
            Reply::bulk("chan:off"),
            Reply::bulk("still")
        ]))
    );
}

/// Calls every shape of key spec (keys at fixed places, after a count, after a keyword,
/// read, written, both) and channels: for each of three users (read-write keys, all keys
/// readable but only some writable, all keys writable but only some readable), rampart
/// refuses with NOPERM exactly the calls a redis-server refuses to the same rules, asked
/// with `ACL DRYRUN`.
#[test]
fn the_rules_refuse_what_redis_acl_dryrun_refuses() {
    const CALLS: &[&str] = &[
        "GET secret:a",
        "SET secret:a v",
        "SET cache:a v GET",
        "GETDEL secret:a",
        "GETEX secret:a PERSIST",
        "COPY secret:a cache:b",
        "COPY cache:a secret:b",
        "LMOVE secret:l cache:l LEFT LEFT",
        "LMOVE cache:l secret:l LEFT LEFT",
        "RPOPLPUSH secret:l cache:l",
        "SMOVE secret:s cache:s m",
        "GEORADIUS secret:g 0 0 1 km",
        "GEORADIUS secret:g 0 0 1 km STORE cache:g",
        "GEORADIUS cache:g 0 0 1 km STORE secret:g",
        "GEORADIUS cache:g 0 0 1 km STOREDIST secret:g",
        "GEORADIUSBYMEMBER cache:g m 1 km STORE secret:g",
        "GEOSEARCHSTORE cache:g secret:g FROMLONLAT 0 0 BYRADIUS 1 km",
        "GEOSEARCHSTORE secret:g cache:g FROMLONLAT 0 0 BYRADIUS 1 km",
        "XREAD STREAMS secret:x 0",
        "XREAD STREAMS cache:x secret:x 0 0",
        "XREADGROUP GROUP g c STREAMS secret:x >",
        "XACK secret:x g 1-1",
        "XAUTOCLAIM secret:x g c 0 0",
        "XGROUP CREATE secret:x g $ MKSTREAM",
        "XINFO STREAM secret:x",
        "PFCOUNT cache:h secret:h",
        "PFMERGE cache:h secret:h",
        "PFMERGE secret:h cache:h",
        "ZRANGESTORE cache:z secret:z 0 -1",
        "ZRANGESTORE secret:z cache:z 0 -1",
        "ZUNIONSTORE cache:z 2 cache:a secret:b",
        "ZINTERCARD 2 cache:a secret:b",
        "SINTERSTORE cache:s secret:a",
        "SDIFFSTORE secret:s cache:a",
        "BITOP AND cache:d secret:a",
        "BITOP AND secret:d cache:a",
        "BITFIELD secret:b GET u8 0",
        "BITFIELD secret:b SET u8 0 1",
        "BITFIELD_RO secret:b GET u8 0",
        "LMPOP 2 cache:l secret:l LEFT",
        "ZMPOP 1 secret:z MIN",
        "SINTERCARD 1 secret:s",
        "SORT secret:l",
        "SORT cache:l STORE secret:q",
        "SORT_RO secret:l",
        "EVAL_RO x 1 secret:a",
        "EVAL x 2 cache:a secret:a",
        "FCALL_RO f 1 secret:a",
        "FCALL f 0 secret:a",
        "OBJECT ENCODING secret:a",
        "MEMORY USAGE secret:a",
        "TTL secret:a",
        "EXPIRE secret:a 10",
        "TOUCH secret:a",
        "DUMP secret:a",
        "EXISTS cache:a secret:a",
        "RENAME secret:a cache:a",
        "RENAME cache:a secret:a",
        "MSETNX cache:a 1 secret:a 2",
        "MSET cache:a 1 cache:b 2",
        "MGET cache:a secret:a",
        "DEL cache:a secret:a",
        "SETRANGE secret:a 0 1",
        "GETRANGE secret:a 0 1",
        "INCR secret:a",
        "HGETALL secret:h",
        "SPOP secret:s",
        "ZADD secret:z 1 a",
        "BLPOP secret:l 0.01",
        "BLMOVE cache:l secret:l LEFT LEFT 0.01",
        "BZMPOP 0.01 1 secret:z MIN",
        "XREAD BLOCK 10 STREAMS secret:x 0",
        "RESTORE secret:a 0 x",
        "PUBLISH secret:c m",
        "PUBLISH chan:1 m",
        "SPUBLISH secret:c m",
        "SPUBLISH chan:1 m",
        "KEYS *",
        "SCAN 0",
        "DBSIZE",
        "INFO",
        "FLUSHDB",
        "CONFIG GET maxmemory",
        "CLIENT LIST",
        "SLOWLOG GET",
        "ACL WHOAMI",
        "ACL LIST",
    ];
    const USERS: &[(&str, &str)] = &[
        ("app", "+@all -@dangerous ~cache:* &chan:*"),
        ("ro", "+@all -@dangerous +sort %R~* ~cache:* &chan:*"),
        ("wo", "+@all -@dangerous +sort %W~* ~cache:* &chan:*"),
    ];
    let mut yaml_users = String::from("\n");
    for (name, rules) in USERS {
        yaml_users.push_str(&format!(
            "    - name: {name}\n      password_sha256: {}\n      rules: on {rules}\n",
            hash(APP_PW)
        ));
    }
    let env = Setup::new(2)
        .password(BACKEND_PW)
        .option("users", yaml_users)
        .start();
    let reference = RedisServer::start();
    let mut redis = Client::connect(&reference.addr());
    let mut differ = Vec::new();
    for (name, rules) in USERS {
        let mut setuser = vec!["ACL", "SETUSER", name, "on", "nopass"];
        setuser.extend(rules.split(' '));
        assert_eq!(redis.cmd(&setuser), Reply::ok());
        let mut c = login(&env, name, APP_PW);
        for call in CALLS {
            let argv: Vec<&str> = call.split(' ').collect();
            let ours = c.cmd(&argv);
            let mut dryrun = vec!["ACL", "DRYRUN", name];
            dryrun.extend(&argv);
            let theirs = redis.cmd(&dryrun);
            let refused_here = matches!(&ours, Reply::Error(e) if e.starts_with("NOPERM"));
            let refused_there = theirs != Reply::ok();
            if refused_here != refused_there {
                differ.push(format!(
                    "{name}: {call}: rampart {ours:?}, Redis {theirs:?}"
                ));
            }
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// `redis_username`: rampart authenticates to the servers as that ACL user.
#[test]
fn redis_username_makes_rampart_authenticate_as_that_backend_user() {
    let env = Setup::new(2)
        .option("redis_auth", "rampart-pw")
        .option("redis_username", "rampart")
        .option("users", users())
        .env("ACL_TEST_OPS_PW", OPS_PW)
        .start();
    for r in &env.redis {
        let set = r.cmd(&[
            "ACL",
            "SETUSER",
            "rampart",
            "on",
            ">rampart-pw",
            "~*",
            "&*",
            "+@all",
        ]);
        assert_eq!(set, Reply::ok());
    }
    let mut app = login(&env, "app", APP_PW);
    for i in 0..10 {
        assert_eq!(app.cmd(&["SET", &format!("cache:{i}"), "v"]), Reply::ok());
    }
    for i in 0..10 {
        let r = &env.redis[env.shard_holding(&format!("cache:{i}"))];
        let list = r.cmd(&["CLIENT", "LIST"]);
        let list = list.as_str().expect("list").to_string();
        assert!(list.contains("user=rampart"), "{list}");
    }
}

/// `rampart -t` refuses a clear-text password, naming the three accepted forms and never
/// the password, and names the user and the rule of a bad rule in Redis' words.
#[test]
fn config_test_refuses_clear_passwords_and_bad_rules() {
    let dir = tempfile::tempdir().expect("dir");
    let check = |users: &str| {
        let path = dir.path().join("t.yml");
        std::fs::write(
            &path,
            format!(
                "p:\n  listen: 127.0.0.1:1\n  servers:\n    - 127.0.0.1:2:1\n  users:\n{users}"
            ),
        )
        .expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["-t", "-c"])
            .arg(&path)
            .output()
            .expect("rampart -t");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = check("    - name: app\n      password: hunter2-secret\n");
    assert!(!ok, "{text}");
    for form in ["password_sha256", "password_file", "password_env"] {
        assert!(text.contains(form), "{text}");
    }
    assert!(!text.contains("hunter2"), "{text}");
    let (ok, text) = check("    - name: app\n      nopass: true\n      rules: on +@raed\n");
    assert!(!ok);
    assert!(
        text.contains("user 'app'")
            && text.contains(
                "Error in ACL SETUSER modifier '+@raed': Unknown command or category name in ACL"
            ),
        "{text}"
    );
    let (ok, text) = check("    - name: app\n      nopass: true\n      rules: on +@read ~*\n");
    assert!(ok, "{text}");
}

/// A Sentinel pool: users at the proxy work the same over the nodes Sentinel names (the
/// default user, without AUTH, may only run INFO, which the test reads the proxy's view by).
#[test]
fn a_sentinel_pool_serves_proxy_users() {
    let users = format!(
        "  users:\n    - name: default\n      nopass: true\n      rules: on +info\n    - name: app\n      password_sha256: {}\n      rules: on +@read +@write ~cache:*\n",
        hash(APP_PW)
    );
    let s = ha::SentinelSetup::start(&users);
    let mut c = Client::connect(&s.proxy.addr());
    // The default user (no AUTH needed) may only run INFO.
    assert_eq!(
        c.cmd(&["SET", "cache:s", "v"]),
        err("NOPERM this user has no permissions to run the 'set' command")
    );
    assert_eq!(c.cmd(&["AUTH", "app", APP_PW]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "cache:s", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "other", "v"]), err(NOPERM_KEY));
    assert_eq!(s.primary.cmd(&["GET", "cache:s"]), Reply::bulk("v"));
    assert_eq!(s.primary.cmd(&["EXISTS", "other"]), Reply::Int(0));
}

/// A reload reaches clients that send nothing: a subscriber whose user may no longer read
/// one of its channels or patterns is closed before it hears another message (as Redis
/// closes such clients when their user's channel rules change), one whose channels are all
/// still allowed keeps them, and an idle MONITOR of a removed user is closed.
#[test]
fn a_reload_closes_idle_subscribers_and_monitors_that_lost_their_rights() {
    let env = start();
    let mut keep = login(&env, "app", APP_PW);
    let mut lost = login(&env, "app", APP_PW);
    let mut lost_pattern = login(&env, "app", APP_PW);
    let mut monitor = login(&env, "ops", OPS_PW);
    let one = Reply::Int(1);
    let confirm = |kind: &str, name: &str| {
        Reply::Array(Some(vec![
            Reply::bulk(kind),
            Reply::bulk(name),
            one.clone(),
        ]))
    };
    assert_eq!(
        keep.cmd(&["SUBSCRIBE", "chan:keep1"]),
        confirm("subscribe", "chan:keep1")
    );
    assert_eq!(
        lost.cmd(&["SUBSCRIBE", "chan:gone"]),
        confirm("subscribe", "chan:gone")
    );
    assert_eq!(
        lost_pattern.cmd(&["PSUBSCRIBE", "chan:*"]),
        confirm("psubscribe", "chan:*")
    );
    assert_eq!(monitor.cmd(&["MONITOR"]), Reply::ok());
    // app keeps only chan:keep* channels; ops is removed.
    let yaml = env.yaml.replace("&chan:*", "&chan:keep*").replace(
        "    - name: ops\n      password_env: ACL_TEST_OPS_PW\n      rules: on +@all ~* &*\n",
        "",
    );
    assert_ne!(yaml, env.yaml);
    reload_with(&env, &yaml);
    // Published straight on the servers: the idle clients are not asked anything.
    env.on_each_backend(&["PUBLISH", "chan:gone", "after the reload"]);
    env.on_each_backend(&["PUBLISH", "chan:keep1", "still yours"]);
    for (name, c) in [
        ("chan:gone", &mut lost),
        ("chan:*", &mut lost_pattern),
        ("monitor", &mut monitor),
    ] {
        let got = common::read_until_closed(c, Duration::from_secs(5));
        let heard = format!("{got:?}");
        assert!(
            !heard.contains("after the reload"),
            "{name}: heard a message after losing its rights: {heard}"
        );
    }
    keep.set_read_timeout(Some(Duration::from_secs(5)));
    assert_eq!(
        keep.read_reply()
            .expect("the allowed subscriber hears its channel"),
        Reply::Array(Some(vec![
            Reply::bulk("message"),
            Reply::bulk("chan:keep1"),
            Reply::bulk("still yours")
        ]))
    );
}

/// SORT's BY and GET patterns read keys no key spec names: as in Redis 7.0, a user without
/// read access to every key may not use them (BY without `*` only skips sorting), so
/// `SORT cache:l BY nosort GET secret:*` cannot read a key outside the user's patterns.
#[test]
fn sort_by_and_get_patterns_need_read_access_to_every_key() {
    let users = "\n    - name: default\n      nopass: true\n      rules: on +@all -@admin ~cache:*\n    - name: ops\n      nopass: true\n      rules: on +@all ~*\n";
    let env = Setup::new(1).option("users", users).start();
    let mut ops = login(&env, "ops", "any");
    assert_eq!(ops.cmd(&["SET", "secret:1", "s3cret"]), Reply::ok());
    assert_eq!(ops.cmd(&["RPUSH", "cache:l", "1"]), Reply::Int(1));
    let mut c = env.client();
    for (args, e) in [
        (
            &["SORT", "cache:l", "BY", "nosort", "GET", "secret:*"][..],
            "ERR GET option of SORT denied due to insufficient ACL permissions.",
        ),
        (
            &["SORT_RO", "cache:l", "GET", "#"][..],
            "ERR GET option of SORT denied due to insufficient ACL permissions.",
        ),
        (
            &["SORT", "cache:l", "BY", "secret:*"][..],
            "ERR BY option of SORT denied due to insufficient ACL permissions.",
        ),
        (
            &["SORT", "cache:l", "LIMIT", "0", "1", "BY", "cache:*"][..],
            "ERR BY option of SORT denied due to insufficient ACL permissions.",
        ),
    ] {
        assert_eq!(c.cmd(args), err(e), "{args:?}");
    }
    assert_eq!(
        c.cmd(&["SORT", "cache:l", "BY", "nosort"]),
        Reply::bulks(["1"])
    );
    assert_eq!(
        c.cmd(&["SORT", "cache:l", "ALPHA", "DESC"]),
        Reply::bulks(["1"])
    );
    // A user who may read every key keeps both.
    assert_eq!(
        ops.cmd(&["SORT", "cache:l", "BY", "nosort", "GET", "secret:*"]),
        Reply::bulks(["s3cret"])
    );
}
